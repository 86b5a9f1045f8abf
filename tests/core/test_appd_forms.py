"""GET .../appd in the forms ETSI GS MEC 010-2 gives it (text/plain: the
AppD file as the package holds it; application/zip: a zip of the AppD's
files) and mecorch's application/json, negotiated by Accept; 404 for an
unknown package with any admitted Accept, 406 when none is admitted or a
multi-file AppD is asked for as text/plain only. On a single node and on an
MEO. Real HTTP server, in-memory drivers."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from mecorch.kernel.http import negotiate
from support import pkglayouts as L
from support.corelab import PKGS
from support.corelab import env  # the fixture: real API, in-memory drivers
from support.corelab import onboard
from support.meolab import system  # the fixture: an MEO and its hosts
from support.meolab import onboard as meo_onboard
from support.packages import fake_docker_tar

__all__ = ["env", "system"]         # the fixtures, used by name

BY_APPD = "/app_pkgm/v1/onboarded_app_packages"
META = "TOSCA-Metadata/TOSCA.meta"


def get(base: str, path: str, accept: str | None = None) -> tuple[int, str, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers={"Accept": accept} if accept is not None else {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, resp.headers.get("Content-Type", ""), raw


def onboard_zip(c, path: Path) -> dict:
    body = {"appPkgName": path.stem, "appPkgVersion": "1", "appPkgPath": str(path),
            "checksum": {"algorithm": "SHA-256",
                         "hash": hashlib.sha256(path.read_bytes()).hexdigest()}}
    return c.post(PKGS, body)[0]


def member(zip_bytes: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        return zf.read(name)


def names(zip_bytes: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        return sorted(zf.namelist())


@pytest.mark.parametrize("accept, choices, admitted", [
    (None, ("a/x", "b/y"), ("a/x", "b/y")),                        # no Accept: anything
    ("*/*", ("a/x", "b/y"), ("a/x", "b/y")),                       # equal q: the server's order
    ("b/y, a/x;q=0.5", ("a/x", "b/y"), ("b/y", "a/x")),            # the client's q first
    ("b/*", ("a/x", "b/y"), ("b/y",)),
    ("image/png", ("a/x", "b/y"), ()),
    ("*/*;q=0.1, a/x;q=0", ("a/x", "b/y"), ("b/y",)),             # the specific range decides
    ("garbage", ("a/x",), ("a/x",)),                               # nothing parses
])
def test_negotiate(accept, choices, admitted):
    assert negotiate(accept, choices) == admitted


def test_mec010_appd_in_each_form(env):
    pkg = onboard(env)
    pkg_zip = Path(env.orch.packages.get(pkg["id"])["_zip"]).read_bytes()
    appd_file = member(pkg_zip, "Definitions/appd.yaml")
    for url in (f"{PKGS}/{pkg['id']}/appd", f"{BY_APPD}/{pkg['appDId']}/appd"):
        status, ctype, raw = get(env.c.base, url, "text/plain")
        assert (status, ctype) == (200, "text/plain") and raw == appd_file
        status, ctype, raw = get(env.c.base, url, "application/zip")
        assert (status, ctype) == (200, "application/zip")
        assert names(raw) == sorted([META, "Definitions/appd.yaml"])
        assert member(raw, "Definitions/appd.yaml") == appd_file
        meta = member(raw, META).decode()
        assert "Entry-Definitions: Definitions/appd.yaml" in meta
        assert "ETSI-Entry-Manifest" not in meta           # the manifest is not in the zip
        status, ctype, raw = get(env.c.base, url, "application/json")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(raw) == yaml.safe_load(appd_file)
        # mecorch's JSON when the client does not say; else the client's q
        for accept, media in ((None, "application/json"), ("*/*", "application/json"),
                              ("text/*", "text/plain"),
                              ("application/zip, text/plain;q=0.5", "application/zip"),
                              ("text/plain, application/zip", "text/plain")):
            status, ctype, _ = get(env.c.base, url, accept)
            assert (status, ctype) == (200, media), accept
        status, ctype, raw = get(env.c.base, url, "image/png")
        assert (status, ctype) == (406, "application/problem+json")
        assert "text/plain" in json.loads(raw)["detail"]
    for url in (f"{PKGS}/nope/appd", f"{BY_APPD}/nope/appd"):
        for accept in ("text/plain", "application/zip", "application/json", None):
            assert get(env.c.base, url, accept)[0] == 404, (url, accept)


def _tosca_package(tmp: Path) -> tuple[Path, bytes, bytes]:
    """A SOL004 CSAR whose MEC 037 TOSCA AppD imports a file of the package."""
    image = fake_docker_tar(tmp / "img")
    doc = yaml.safe_load(L.mec037_appd("container", "tosca-app", "../Artifacts/app.tar",
                                       L.sha(image), "10.90.0.240"))
    doc["imports"].append("types/local.yaml")
    appd = L.dump(doc)
    local = L.dump({"tosca_definitions_version": "tosca_simple_yaml_1_3",
                    "node_types": {"Tests.nodes.Local": {"derived_from": "tosca.nodes.Root"}}})
    path = L.sol004(tmp / "tosca.zip", appd, "Artifacts/app.tar", image,
                    extra={"Definitions/types/local.yaml": local,
                           "Artifacts/ChangeLog.txt": b"1.0\n"})
    return path, appd, local


def test_tosca_appd_of_several_files_is_a_zip(env):
    path, appd, local = _tosca_package(env.tmp)
    pkg = onboard_zip(env.c, path)
    url = f"{PKGS}/{pkg['id']}/appd"
    status, ctype, raw = get(env.c.base, url, "text/plain")
    assert status == 406 and "application/zip" in json.loads(raw)["detail"]
    for accept in ("text/plain, application/zip", "application/zip"):
        status, ctype, raw = get(env.c.base, url, accept)
        assert (status, ctype) == (200, "application/zip")
        # the descriptor and what it imports, no image, manifest or change log
        assert names(raw) == sorted([META, "Definitions/app.yaml", "Definitions/types/local.yaml"])
        assert member(raw, "Definitions/app.yaml") == appd
        assert member(raw, "Definitions/types/local.yaml") == local
        assert "Entry-Definitions: Definitions/app.yaml" in member(raw, META).decode()
    status, _, raw = get(env.c.base, url, "application/json")
    assert status == 200 and json.loads(raw)["appDId"] == "tosca-app"


def test_tosca_appd_of_one_file_is_text(env):
    image = fake_docker_tar(env.tmp / "img")
    appd = L.mec037_appd("container", "one-file", "../Artifacts/app.tar", L.sha(image),
                         "10.90.0.241")
    pkg = onboard_zip(env.c, L.sol004(env.tmp / "one.zip", appd, "Artifacts/app.tar", image))
    status, ctype, raw = get(env.c.base, f"{BY_APPD}/one-file/appd", "text/plain")
    assert (status, ctype, raw) == (200, "text/plain", appd)      # its URL import is no file
    assert pkg["appDId"] == "one-file"


def test_edgegallery_appd_zip_is_the_package_s(env):
    image = fake_docker_tar(env.tmp / "img")
    files = L.edgegallery_files("container", "eg", image, "10.90.0.242")
    pkg = onboard_zip(env.c, L.edgegallery(env.tmp / "eg.zip", "container", "eg", image,
                                           "10.90.0.242", files=files))
    url = f"{PKGS}/{pkg['id']}/appd"
    status, ctype, raw = get(env.c.base, url, "application/zip")
    assert (status, ctype, raw) == (200, "application/zip", files["APPD/eg.zip"])
    assert get(env.c.base, url, "text/plain")[0] == 406
    assert get(env.c.base, url, "text/plain, application/zip")[1] == "application/zip"


def test_appd_forms_on_an_meo(system):
    pkg = meo_onboard(system)
    pkg_zip = Path(system.meo.packages.get(pkg["id"])["_zip"]).read_bytes()
    appd_file = member(pkg_zip, "Definitions/appd.yaml")
    for url in (f"{PKGS}/{pkg['id']}/appd", f"{BY_APPD}/{pkg['appDId']}/appd"):
        assert get(system.c.base, url, "text/plain") == (200, "text/plain", appd_file)
        status, ctype, raw = get(system.c.base, url, "application/zip")
        assert (status, ctype) == (200, "application/zip")
        assert member(raw, "Definitions/appd.yaml") == appd_file
        assert get(system.c.base, url)[1] == "application/json"
        assert get(system.c.base, url, "image/png")[0] == 406
    assert get(system.c.base, f"{BY_APPD}/nope/appd", "text/plain")[0] == 404
