"""Driver lookup, the image catalog and the error hierarchy."""

import json

import pytest

from mecorch.kernel import errors
from mecorch.driverapi.catalog import ImageCatalog
from mecorch.driverapi.contracts import load_driver
from mecorch.driverapi.model import HostCapacity


def test_unknown_driver_is_a_clear_error():
    with pytest.raises(errors.InvalidInput, match="no cim driver named 'nope'"):
        load_driver("cim", {"driver": "nope"})


def test_driver_of_the_wrong_role_is_refused():
    with pytest.raises(errors.InvalidInput, match="is not a vim driver"):
        load_driver("vim", {"driver": "docker"})


def test_entry_points_name_the_three_drivers():
    from importlib import metadata
    names = {ep.name for ep in metadata.entry_points(group="mecorch.drivers")}
    assert {"docker", "libvirt", "linux"} <= names


def test_problem_details_carry_status_and_title():
    body = errors.CapacityExceeded("no host has 64 vCPU").problem("/app_lcm/v1/x")
    assert body == {"type": "about:blank", "title": "Insufficient capacity", "status": 409,
                    "detail": "no host has 64 vCPU", "instance": "/app_lcm/v1/x"}
    assert issubclass(errors.BackendUnavailable, errors.BackendError)
    assert errors.ImageNotFound("x").status == 404


def test_capacity_fits():
    cap = HostCapacity(2, 1.5, 1024, 512, 10, 9)
    assert cap.fits(0.5, 512, 1)
    assert not cap.fits(0.6, 1, 0)
    assert not cap.fits(0, 513, 0)
    assert not cap.fits(0, 0, 1.5)


def test_catalog_roundtrip_and_atomic_file(tmp_path):
    cat = ImageCatalog(tmp_path / "sub" / "images.json")
    assert cat.get("a") is None
    cat.put("a", sha256="x", available=True)
    cat.put("a", available=False)
    assert cat.get("a")["sha256"] == "x" and cat.get("a")["available"] is False
    assert json.loads((tmp_path / "sub" / "images.json").read_text())["a"]["image"] == "a"
    cat.remove("a")
    cat.remove("a")                     # removing what is gone succeeds
    assert cat.all() == {}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["images.json"]  # no temp left
