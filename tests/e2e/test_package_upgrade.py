"""Package upgrades (issue 18), on the real backends: two versions of one
app onboarded, instances of both running at once, lookups without a version
taking the newest enabled one, and the old version deleted (image and all)
after its last instance ends, following the deletion-pending rule.

Both versions ship the same image on purpose (an AppD-only upgrade): the
registry deletes a manifest with every tag of it in its repository, so the
old version's deletion must not take the new version's image with it.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from support import pkglayouts as L
from conftest import run
from mecorch.kernel.client import ApiError

pytestmark = [pytest.mark.docker, pytest.mark.libvirt]
MEMBER = {"container": "Artifacts/app.tar", "vm": "Artifacts/app.qcow2"}


@pytest.fixture(scope="module")
def lab():
    with L.lab("upg") as lab:
        yield lab


@pytest.fixture(scope="module")
def images(sample_container, sample_vm):
    return {"container": Path(sample_container["tar"]).read_bytes(),
            "vm": Path(sample_vm["path"]).read_bytes()}


def package(tmp: Path, kind: str, app: str, image: bytes, version: str,
            soft: str | None = None) -> Path:
    appd = L.mec_appd(kind, app, MEMBER[kind], None, version)
    if soft:
        appd = appd.replace(f"appSoftVersion: '{version}'".encode(),
                            f"appSoftVersion: '{soft}'".encode())
        assert f"appSoftVersion: '{soft}'".encode() in appd
    return L.sol004(tmp / f"{app}-{version}-{soft}.zip", appd, MEMBER[kind], image)


def registry_has(image: str) -> bool:
    """Whether the loopback registry still serves `image` (host/repo:tag)."""
    host, rest = image.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    assert host.startswith("127.0.0.1:")
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repo}/tags/list", timeout=5) as r:
            return tag in (json.load(r).get("tags") or [])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


def vm_image_exists(lab, image: str) -> bool:
    return (lab["tmp"] / "state/hosts" / lab["host"] / "vm-images" / f"{image}.qcow2").exists()


def running_image(iid: str) -> str:
    out = run("docker", "ps", "--filter", f"label=mecorch.instance={iid}",
              "--format", "{{.Image}}").stdout.split()
    return [o for o in out if "mecorch-apps" in o][0]


@pytest.mark.parametrize("kind", ("container", "vm"))
def test_two_versions_run_at_once_and_the_old_one_goes_after_its_last_instance(
        lab, images, tmp_path, kind):
    c, host = lab["c"], lab["host"]
    app = f"upg-{kind}"
    v1 = L.onboard(c, package(tmp_path, kind, app, images[kind], "1.0"))
    a, op = L.deploy(c, host, app)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert (a["appPkgId"], a["appDVersion"], a["appSoftVersion"]) == (v1["id"], "1.0", "1.0")

    # the same version again is refused, naming it; nothing of it kept
    before = c.get_all(L.PKGS)
    with pytest.raises(ApiError) as e:
        L.onboard(c, package(tmp_path, kind, app, images[kind], "1.0"), name="again")
    assert e.value.status == 409 and "appDVersion '1.0', appSoftVersion '1.0'" in e.value.detail
    assert c.get_all(L.PKGS) == before

    # an upgrade: another appDVersion (and appSoftVersion) of the same appDId
    v2 = L.onboard(c, package(tmp_path, kind, app, images[kind], "2.0", "2.1"))
    assert (v2["appDId"], v2["appDVersion"], v2["appSoftwareVersion"]) == (app, "2.0", "2.1")
    image1, image2 = v1["softwareImages"][0]["imagePath"], v2["softwareImages"][0]["imagePath"]
    assert image1 != image2
    listed = {p["id"]: (p["appDVersion"], p["appSoftwareVersion"])
              for p in c.get_all(L.PKGS + f"?filter=(eq,appDId,{app})")}
    assert listed == {v1["id"]: ("1.0", "1.0"), v2["id"]: ("2.0", "2.1")}
    # a lookup without a version: the newest enabled one
    assert c.get(f"/app_pkgm/v1/onboarded_app_packages/{app}/appd")["appDVersion"] == "2.0"

    b, op = L.deploy(c, host, app)
    assert op["operationState"] == "COMPLETED", op.get("error")
    assert (b["appPkgId"], b["appDVersion"], b["appSoftVersion"]) == (v2["id"], "2.0", "2.1")
    # both run at once, each from its own version's image
    for inst in (a, b):
        ip = inst["allocatedResources"]["network"][0]["ip"]
        assert L.http(f"http://{ip}/").startswith("mecorch sample")
    if kind == "container":
        repo1, repo2 = (i.split(":")[1].split("/", 1)[1] for i in (image1, image2))
        assert running_image(a["id"]).split("@")[0].endswith(repo1)
        assert running_image(b["id"]).split("@")[0].endswith(repo2)
    assert {c.get(f"{L.PKGS}/{p['id']}")["usageState"] for p in (v1, v2)} == {"IN_USE"}

    # the old version disabled and deleted while its instance runs: pending
    c.call("PATCH", f"{L.PKGS}/{v1['id']}", {"operationState": "DISABLED"})
    assert c.call("DELETE", f"{L.PKGS}/{v1['id']}")[0] == 202
    assert c.get(f"{L.PKGS}/{v1['id']}")["deletionPending"] is True
    with pytest.raises(ApiError) as e:                # a pending version cannot come back
        c.call("PATCH", f"{L.PKGS}/{v1['id']}", {"operationState": "ENABLED"})
    assert e.value.status == 409
    inst, _ = c.post(L.INST, {"appDId": app})         # new instances: the newest enabled
    assert inst["appPkgId"] == v2["id"]
    c.call("DELETE", f"{L.INST}/{inst['id']}")

    # the old version's last instance ends: the package and its image go,
    # the new version (same image content) keeps running and stays onboarded
    assert L.terminate(c, a["id"])["operationState"] == "COMPLETED"
    with pytest.raises(ApiError) as e:
        c.get(f"{L.PKGS}/{v1['id']}")
    assert e.value.status == 404
    if kind == "container":
        assert not registry_has(image1) and registry_has(image2)
    else:
        assert not vm_image_exists(lab, image1) and vm_image_exists(lab, image2)
    ip = b["allocatedResources"]["network"][0]["ip"]
    assert L.http(f"http://{ip}/").startswith("mecorch sample")
    assert c.get(f"{L.PKGS}/{v2['id']}")["usageState"] == "IN_USE"

    assert L.terminate(c, b["id"])["operationState"] == "COMPLETED"
    assert c.get(f"{L.PKGS}/{v2['id']}")["usageState"] == "NOT_IN_USE"
    assert L.leftovers(a["id"]) == [] and L.leftovers(b["id"]) == []
    for iid in (a["id"], b["id"]):
        c.call("DELETE", f"{L.INST}/{iid}")


def test_a_new_version_of_a_disabled_app_is_what_lookups_find(lab, images, tmp_path):
    c = lab["c"]
    app = "upg-lookup"
    v1 = L.onboard(c, package(tmp_path, "container", app, images["container"], "1.0"))
    v2 = L.onboard(c, package(tmp_path, "container", app, images["container"], "1.1"))
    assert c.post(L.INST, {"appDId": app})[0]["appPkgId"] == v2["id"]
    # the newest disabled: the newest enabled one is used
    c.call("PATCH", f"{L.PKGS}/{v2['id']}", {"operationState": "DISABLED"})
    assert c.post(L.INST, {"appDId": app})[0]["appPkgId"] == v1["id"]
    # none enabled: creating is refused; the AppD stays readable (the newest)
    c.call("PATCH", f"{L.PKGS}/{v1['id']}", {"operationState": "DISABLED"})
    with pytest.raises(ApiError) as e:
        c.post(L.INST, {"appDId": app})
    assert e.value.status == 409 and "DISABLED" in e.value.detail
    assert c.get(f"/app_pkgm/v1/onboarded_app_packages/{app}/appd")["appDVersion"] == "1.1"
    for inst in c.get(L.INST + f"?filter=(eq,appDId,{app})"):
        c.call("DELETE", f"{L.INST}/{inst['id']}")


# -- the version rules, with in-memory drivers (fakes) -------------------------------

from support.corelab import env  # noqa: E402,F401 - the in-memory lab fixture


def test_usable_takes_the_version_asked_for_and_usage_counts_per_version(env):
    from support.corelab import create, instantiate, onboard
    from mecorch.kernel.errors import Conflict, NotFound
    v1 = onboard(env, appDVersion="1.0")
    v2 = onboard(env, appDVersion="2.0")
    pk = env.orch.packages
    assert pk.usable("sample-http")["id"] == v2["id"]                 # no version: newest
    assert pk.usable("sample-http", v1["id"])["id"] == v1["id"]        # the version asked for
    with pytest.raises(NotFound):
        pk.usable("other-app", v1["id"])                                # not that app's package
    b = create(env)
    assert instantiate(env, b["id"])["operationState"] == "COMPLETED"
    usage = {p["id"]: p["usageState"] for p in env.c.get(L.PKGS)}
    assert usage == {v1["id"]: "NOT_IN_USE", v2["id"]: "IN_USE"}       # counted per version
    env.c.call("PATCH", f"{L.PKGS}/{v1['id']}", {"operationState": "DISABLED"})
    with pytest.raises(Conflict, match="DISABLED"):
        pk.usable("sample-http", v1["id"])
    assert env.c.call("DELETE", f"{L.PKGS}/{v1['id']}")[0] == 204      # no user: gone now


def test_an_instance_created_before_an_upgrade_deploys_its_own_version(env):
    from support.corelab import create, instantiate, onboard
    v1 = onboard(env, appDVersion="1.0")
    a = create(env)                                     # created from 1.0 ...
    onboard(env, appDVersion="2.0")
    assert instantiate(env, a["id"])["operationState"] == "COMPLETED"   # ... deployed after 2.0
    deployed = env.cim.instances[a["id"]]["request"].image
    assert deployed == env.c.get(f"{L.PKGS}/{v1['id']}")["softwareImages"][0]["imagePath"]
