"""Two-step onboarding (MEC 010-2 as an OSS uses it): POST a CreateAppPkg
without appPkgPath, then PUT the zip to .../package_content. Through the
real HTTP server and the real package checks, with in-memory drivers for
the image repositories (the real-backend run is test_subscriptions' OSS
test)."""

from __future__ import annotations

import hashlib
import json
import http.client
import socket
import time

import pytest

from mecorch.kernel.client import ApiError
from support.corelab import PKGS
from support.uploadlab import (  # noqa: F401
    Lab, zip_package, lab)

ZIP = {"Accept": "application/zip"}


def _put(lab, pkg_id: str, data: bytes, ctype="application/zip", chunked=False,
         headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=30)
    hdrs = {"Content-Type": ctype, **(headers or {})}
    if chunked:
        def chunks():
            for i in range(0, len(data), 700):
                yield data[i:i + 700]
        conn.request("PUT", f"{PKGS}/{pkg_id}/package_content", body=chunks(), headers=hdrs,
                     encode_chunked=True)
    else:
        conn.request("PUT", f"{PKGS}/{pkg_id}/package_content", body=data, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, resp.read(), dict(resp.headers)
    conn.close()
    return out


def _state(lab, pkg_id):
    return lab.c.get(f"{PKGS}/{pkg_id}")["onboardingState"]


def test_create_then_put_onboards(lab):
    data, body = zip_package(lab)
    created, headers = lab.c.post(PKGS, body)
    assert created["onboardingState"] == "CREATED"
    assert headers["Location"] == created["_links"]["self"]["href"]
    assert lab.c.get(f"{PKGS}/{created['id']}")["onboardingState"] == "CREATED"
    assert lab.c.get(PKGS) == []                          # listings show onboarded ones
    with pytest.raises(ApiError) as e:                    # no content yet
        lab.c.call("GET", f"{PKGS}/{created['id']}/package_content", headers=ZIP)
    assert e.value.status == 409

    status, raw, hdrs = _put(lab, created["id"], data)
    assert status == 202, raw
    assert hdrs["Location"] == created["_links"]["self"]["href"]
    info = lab.c.get(f"{PKGS}/{created['id']}")
    assert info["onboardingState"] == "ONBOARDED" and info["appDId"] == "sample-http"
    assert info["userDefinedData"] == {"by": "oss"} and lab.cim.images
    assert lab.c.call("GET", f"{PKGS}/{created['id']}/package_content",
                      headers=ZIP)[1] == data
    with pytest.raises(ApiError) as e:        # the client's default Accept: JSON only
        lab.c.get(f"{PKGS}/{created['id']}/package_content")
    assert e.value.status == 406

    # the content once more: 409, and the package is untouched
    status, raw, _ = _put(lab, created["id"], data)
    assert status == 409, raw
    assert _state(lab, created["id"]) == "ONBOARDED"


def test_chunked_upload(lab):
    data, body = zip_package(lab)
    created, _ = lab.c.post(PKGS, body)
    status, raw, _ = _put(lab, created["id"], data, chunked=True)
    assert status == 202, raw
    assert _state(lab, created["id"]) == "ONBOARDED"


def test_checksum_mismatch_removes_everything(lab):
    data, body = zip_package(lab)
    body["checksum"]["hash"] = "0" * 64
    created, _ = lab.c.post(PKGS, body)
    status, raw, _ = _put(lab, created["id"], data)
    assert status == 422 and b"checksum" in raw
    with pytest.raises(ApiError) as e:
        lab.c.get(f"{PKGS}/{created['id']}")
    assert e.value.status == 404
    assert not list((lab.tmp / "state/packages").iterdir()) and lab.cim.images == {}


def test_bad_zip_is_refused(lab):
    data = b"PK\x03\x04 not really a zip" * 10
    created, _ = lab.c.post(PKGS, {"appPkgName": "x", "appPkgVersion": "1", "checksum": {
        "algorithm": "SHA-256", "hash": hashlib.sha256(data).hexdigest()}})
    status, raw, _ = _put(lab, created["id"], data)
    assert 400 <= status < 500, raw
    assert status != 404


def test_wrong_content_type_and_unknown_package(lab):
    data, body = zip_package(lab)
    created, _ = lab.c.post(PKGS, body)
    status, raw, _ = _put(lab, created["id"], data, ctype="application/json")
    assert status == 415 and b"application/zip" in raw
    assert _state(lab, created["id"]) == "CREATED"        # nothing happened
    assert _put(lab, "nope", data)[0] == 404
    status, raw, _ = _put(lab, created["id"], b"")
    assert status == 400 and b"empty" in raw


def test_size_limit(tmp_path):
    """Over orchestrator.max_package_bytes: a Content-Length that says so is
    refused from the headers (the body is not read), a chunked body as soon
    as it passes the limit; the package resource is removed either way
    (the upload had claimed it), and nothing of the body is kept."""
    lab = Lab(tmp_path, max_package_bytes=4096)
    try:
        _, body = zip_package(lab)
        # (what is sent after the headers, the framing header): nothing is
        # sent that the server does not read, so its answer is never lost
        # to a reset connection
        for framing, payload in ((b"Content-Length: 5000", b""),
                                 (b"Transfer-Encoding: chunked", b"1388\r\n" + b"x" * 5000)):
            created, _ = lab.c.post(PKGS, body)
            url = f"{PKGS}/{created['id']}/package_content"
            with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as sock:
                sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: x\r\n"
                             f"Content-Type: application/zip\r\n".encode()
                             + framing + b"\r\n\r\n" + payload)
                resp = http.client.HTTPResponse(sock)
                resp.begin()
                assert resp.status == 413, (framing, resp.read())
            with pytest.raises(ApiError) as e:
                lab.c.get(f"{PKGS}/{created['id']}")
            assert e.value.status == 404
        assert not list((tmp_path / "state/packages").glob("*.zip*"))
    finally:
        lab.stop()


def test_both_framings_or_bad_chunks_are_refused(lab):
    data, body = zip_package(lab)
    cases = [   # (headers, body, refused before the upload starts)
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", True),
        (b"Transfer-Encoding: gzip\r\n", b"", True),
        (b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n", True),
        (b"Content-Length: +5\r\n", b"hello", True),
        (b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", False),
        (b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n", False),
        (b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n", False),
    ]
    for head, tail, early in cases:
        created, _ = lab.c.post(PKGS, body)
        url = f"{PKGS}/{created['id']}/package_content"
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as s:
            # a framing refused from the headers: its body is never read, so
            # it is not sent (unread bytes would reset the connection)
            s.sendall(b"PUT " + url.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/zip\r\n" + head + b"\r\n"
                      + (b"" if early else tail))
            resp = http.client.HTTPResponse(s)
            resp.begin()
            assert resp.status == 400, (head, tail, resp.read())
        # a framing refusal comes before the package is touched; a body
        # broken half-way removes the resource (nothing of it is kept)
        if early:
            assert _state(lab, created["id"]) == "CREATED"
        else:
            with pytest.raises(ApiError) as e:
                lab.c.get(f"{PKGS}/{created['id']}")
            assert e.value.status == 404


def test_put_while_uploading_is_409(lab):
    """A second PUT while the first is still sending: 409; the first then
    completes."""
    data, body = zip_package(lab)
    created, _ = lab.c.post(PKGS, body)
    url = f"{PKGS}/{created['id']}/package_content"
    s = socket.create_connection(("127.0.0.1", lab.port), timeout=30)
    s.sendall(f"PUT {url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:100])
    for _ in range(100):
        if _state(lab, created["id"]) == "UPLOADING":
            break
        time.sleep(0.02)
    assert _state(lab, created["id"]) == "UPLOADING"
    status, raw, _ = _put(lab, created["id"], data)
    assert status == 409, raw
    s.sendall(data[100:])
    resp = http.client.HTTPResponse(s)
    resp.begin()
    assert resp.status == 202, resp.read()
    s.close()
    assert _state(lab, created["id"]) == "ONBOARDED"


def test_created_package_survives_restart_and_can_be_deleted(lab):
    data, body = zip_package(lab)
    created, _ = lab.c.post(PKGS, body)
    other, _ = lab.c.post(PKGS, body)
    lab.restart()
    assert _state(lab, created["id"]) == "CREATED"
    assert _put(lab, created["id"], data)[0] == 202
    assert lab.c.call("DELETE", f"{PKGS}/{other['id']}")[0] == 204
    with pytest.raises(ApiError) as e:
        lab.c.get(f"{PKGS}/{other['id']}")
    assert e.value.status == 404


def test_client_upload_package(lab):
    data, body = zip_package(lab)
    zpath = lab.tmp / "upload.zip"
    zpath.write_bytes(data)
    body.pop("checksum")                     # the helper computes it
    info = lab.c.upload_package(body, zpath)
    assert info["onboardingState"] == "ONBOARDED" and info["appDId"] == "sample-http"
    # the same appDId again: refused, and that resource is gone
    with pytest.raises(ApiError) as e:
        lab.c.upload_package(body, zpath)
    assert e.value.status == 409
    assert [p["id"] for p in lab.c.get(PKGS)] == [info["id"]]


def test_cli_onboard_upload(lab):
    """`mecorch package onboard --upload`: the zip goes over the API (the
    server never gets a path)."""
    import json as _json
    import os
    import subprocess
    import sys
    from pathlib import Path
    data, _ = zip_package(lab)
    zpath = lab.tmp / "cli.zip"
    zpath.write_bytes(data)
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "mecorch.cli", "--api", f"http://127.0.0.1:{lab.port}",
         "--output", "json", "package", "onboard", "--upload", str(zpath), "--name", "cli"],
        capture_output=True, text=True, timeout=120, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo), "MECORCH_TOKEN": ""})
    assert out.returncode == 0, out.stderr
    info = _json.loads(out.stdout)
    assert info["onboardingState"] == "ONBOARDED" and info["appPkgName"] == "cli"
    assert lab.orch.store.get("packages", info["id"])["_path"] is None   # uploaded, no path


def test_refused_upload_keeps_the_connection(lab):
    """A PUT refused before its body is read (415, 404, 409) still reads a
    small body, so the client gets its answer and the keep-alive
    connection goes on."""
    data, body = zip_package(lab)
    created, _ = lab.c.post(PKGS, body)
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=10)
    for path, ctype, want in ((f"{PKGS}/{created['id']}/package_content", "text/plain", 415),
                              (f"{PKGS}/nope/package_content", "application/zip", 404)):
        conn.request("PUT", path, body=data, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == want
    conn.request("GET", f"{PKGS}/{created['id']}")          # the same connection
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["onboardingState"] == "CREATED"
    conn.close()
