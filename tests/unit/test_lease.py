"""One owner per host id: the lease (real flock, real processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mecorch.kernel.errors import Conflict, InvalidInput
from mecorch.mepm.lease import HostLease


@pytest.fixture(autouse=True)
def lease_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MECORCH_LEASE_DIR", str(tmp_path / "leases"))
    return tmp_path / "leases"


def test_second_holder_is_refused_naming_the_first(tmp_path):
    a = HostLease(str(tmp_path / "a"), "127.0.0.1:1")
    a.acquire(["edge1", "edge2"])
    b = HostLease(str(tmp_path / "b"), "127.0.0.1:2")
    with pytest.raises(Conflict) as e:
        b.acquire(["edge3", "edge2"])
    assert "edge host 'edge2' is held by another mecorch" in e.value.detail
    assert str(tmp_path / "a") in e.value.detail and "127.0.0.1:1" in e.value.detail
    assert not b.holds("edge3")            # all or nothing
    a.release()
    b.acquire(["edge3", "edge2"])
    assert b.holds("edge2")
    b.release()


def test_a_dead_holder_never_blocks(tmp_path, lease_dir):
    code = ("import os, sys; from mecorch.mepm.lease import HostLease; "
            f"HostLease({str(tmp_path / 'a')!r}, 'x').acquire(['edge1']); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"MECORCH_LEASE_DIR": str(lease_dir), "PYTHONPATH": "."})
    b = HostLease(str(tmp_path / "b"), "y")
    b.acquire(["edge1"])                   # the kernel dropped the flock with the process
    b.release()


def test_host_id_is_validated(tmp_path):
    with pytest.raises(InvalidInput):
        HostLease(str(tmp_path), "x").acquire(["../etc"])
