"""The OpenStack VIM: what is specific to it (the generic contract is in
tests/conformance/). Against the real all-in-one test cloud that
tests/openstack/cloud.sh starts, except the pure config and error-mapping
tests at the top.

Each real test uses its own edge host id (so its own Glance image names,
ports and flavors) and the lab's teardown asserts nothing of it is left.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import yaml
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from conformance.compute_labs import OS_CONTAINER, OpenStackLab, os_owned
from conftest import run
from drivers.openstack_vim import OpenStackVIM
from drivers.openstack_vim.errors import translate
from drivers.openstack_vim.settings import parse
from mecorch.kernel import config, errors
from mecorch.driverapi.contracts import load_driver
from mecorch.driverapi.model import VolumeSpec
from mecorch.kernel.states import ObservedState

PASSWORD = "mecorch-test-cloud"


# -- configuration and error mapping (no cloud) ---------------------------------------

def test_config_typos_and_contradictions_are_named(tmp_path):
    base = {"driver": "openstack", "cloud": "c", "network": "n"}
    # a typo is the configuration's (one check of the driver's schema, at load)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"hosts": [{"id": "h", "vim": {**base,
                                                              "availabilty_zone": "nova"}}]}))
    with pytest.raises(errors.InvalidInput,
                       match=r"at hosts\[0\]\.vim\.availabilty_zone; did you mean "
                             "'availability_zone'"):
        config.load(f)
    f.write_text(yaml.safe_dump({"hosts": [{"id": "h", "vim": {**base, "pool": "p"}}]}))
    with pytest.raises(errors.InvalidInput, match="a key of the libvirt driver, not of "
                                                  "'openstack'"):
        config.load(f)
    f.write_text(yaml.safe_dump({"hosts": [{"id": "h", "vim": {**base, "boot_timeout_s": "x"}}]}))
    with pytest.raises(errors.InvalidInput, match=r"vim\.boot_timeout_s must be a number"):
        config.load(f)
    f.write_text(yaml.safe_dump({"hosts": [{"id": "h", "vim": base}]}))
    assert parse(config.load(f)["hosts"][0]["vim"]).boot_timeout_s == 300
    with pytest.raises(errors.InvalidInput, match="either 'cloud'"):
        parse({**base, "auth": {"auth_url": "http://x/v3", "password": "p"}})
    with pytest.raises(errors.InvalidInput, match="vim.network"):
        parse({"driver": "openstack", "cloud": "c"})
    with pytest.raises(errors.InvalidInput, match="did you mean 'password'"):
        parse({"driver": "openstack", "network": "n",
               "auth": {"auth_url": "http://x/v3", "pasword": "p"}})
    s = parse({"driver": "openstack", "network": "n", "region": "R",
               "auth": {"auth_url": "http://x/v3", "application_credential_id": "i",
                        "application_credential_secret": "very-secret"}})
    assert s.auth_type == "v3applicationcredential"
    assert "very-secret" not in repr(s) and "very-secret" not in s.describe()


def test_errors_map_to_mecorch_classes():
    cases = [
        (ksa.ConnectFailure("refused"), errors.BackendUnavailable),
        (sdk.HttpException("down", http_status=503), errors.BackendUnavailable),
        (sdk.HttpException("Quota exceeded for cores", http_status=403), errors.CapacityExceeded),
        (sdk.HttpException("OverQuota", http_status=409), errors.CapacityExceeded),
        (sdk.HttpException("in use", http_status=409), errors.Conflict),
        (sdk.NotFoundException("gone", http_status=404), errors.NotFound),
        (sdk.ResourceTimeout("slow"), errors.Timeout),
        (ksa.Unauthorized("no"), errors.BackendError),
        (sdk.SDKException("odd"), errors.BackendError),
    ]
    for exc, cls in cases:
        got = translate(exc, "op")
        assert type(got) is cls, (exc, got)
        assert got.detail.startswith("op: ")
    assert translate(sdk.HttpException("Quota exceeded", http_status=403), "x").status == 409


def test_entry_point_loads_without_connecting(tmp_path):
    drv = load_driver("vim", {"driver": "openstack", "cloud": "nowhere", "network": "n",
                              "host_id": "h", "state_dir": str(tmp_path / "s"),
                              "run_dir": str(tmp_path / "r")})
    assert isinstance(drv, OpenStackVIM) and drv._conns == []
    caps = drv.capabilities()
    assert caps.reserved_volumes is False and caps.published_ports is False


# -- against the test cloud ------------------------------------------------------------

@pytest.fixture
def lab(uid, tmp_path, sample_vm):
    lab = OpenStackLab(uid, tmp_path, {"vm": sample_vm})
    lab.make()
    yield lab
    lab.teardown()


def aio(*args: str) -> None:
    run("docker", "exec", OS_CONTAINER, "/usr/local/sbin/aio", *args)


@pytest.mark.openstack
def test_doctor_checks_the_cloud_for_real(lab, caplog):
    caplog.set_level(logging.DEBUG)         # whatever the libraries log...
    checks = {c.name: c for c in lab.drv.check()}
    for name in ("vim.auth", "vim.catalog", "vim.glance", "vim.nova", "vim.network", "vim.quota"):
        assert checks[name].ok, checks[name]
    assert "Placement" in checks["vim.catalog"].detail
    assert "cores" in checks["vim.quota"].detail
    token = lab.drv._connect().auth_token
    assert token and token not in caplog.text and PASSWORD not in caplog.text  # ...no secret
    bad = OpenStackVIM(lab.config(cloud=None, clouds_yaml=None, auth={
        "auth_url": "http://127.0.0.1:35357/v3", "username": "admin", "password": "wrong",
        "project_name": "admin", "user_domain_name": "Default",
        "project_domain_name": "Default"}))
    (auth,) = [c for c in bad.check() if c.name == "vim.auth"]
    assert not auth.ok and auth.fix and "wrong" not in auth.detail


@pytest.mark.openstack
def test_glance_is_the_image_repository(lab, sample_vm, tmp_path):
    from drivers.openstack_vim.images import glance_name
    name = glance_name(lab.cfg["host_id"], "sample")
    (img,) = list(lab.admin.image.images(name=name))
    assert img.status == "active" and img.visibility == "private"
    assert img.properties["mecorch_sha256"] == sample_vm["sha256"]
    assert img.properties["mecorch_host"] == lab.cfg["host_id"]
    rec = lab.drv.check_image("sample")
    assert rec["hash_algo"] == img.hash_algo and rec["hash_value"] == img.hash_value
    lab.drv.set_image_available("sample", False)
    assert lab.admin.image.get_image(img.id).status == "deactivated"
    lab.drv.set_image_available("sample", True)
    assert lab.admin.image.get_image(img.id).status == "active"
    # A package whose checksum is wrong never reaches Glance.
    with pytest.raises(errors.IntegrityError):
        lab.drv.import_image("bad-sum", sample_vm["path"], "0" * 64)
    assert not list(lab.admin.image.images(name=glance_name(lab.cfg["host_id"], "bad-sum")))
    backed = tmp_path / "backed.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", sample_vm["path"],
        str(backed))
    with pytest.raises(errors.InvalidInput, match="backing"):
        lab.drv.import_image("backed", str(backed))
    # Importing again replaces the image (one Glance image per name).
    lab.drv.import_image("sample", sample_vm["path"], sample_vm["sha256"])
    assert len(list(lab.admin.image.images(name=name))) == 1


@pytest.mark.openstack
def test_server_flavor_port_and_disks_as_nova_sees_them(lab, uid):
    iid = f"os-{uid}"
    alloc = lab.drv.deploy(lab.request(iid, vcpu=1.5, memory_mb=256, disk_gb=1,
                                       volumes=(VolumeSpec("data", 0.5),)))
    try:
        srv = lab.admin.compute.get_server(alloc.handle["server_id"])
        assert srv.status == "ACTIVE"
        assert srv.metadata["mecorch_instance"] == iid
        assert srv.metadata["mecorch_host"] == lab.cfg["host_id"]
        assert srv.flavor["vcpus"] == 2 and srv.flavor["ram"] == 256       # ceil(1.5)
        assert srv.flavor["disk"] == 1 and srv.flavor["ephemeral"] == 1    # 0.5 GB -> 1 GB
        port = lab.admin.network.get_port(alloc.handle["port_id"])
        assert port.device_id == srv.id and port.name == f"mecorch-{iid}"
        assert alloc.addresses[0].ip == port.fixed_ips[0]["ip_address"]
        assert alloc.addresses[0].mac == port.mac_address
        assert [s["name"] for s in alloc.storage] == ["root", "data"]
        assert alloc.handle["flavor"] in {f.name for f in lab.admin.compute.flavors()}
        with pytest.raises(errors.Conflict):
            lab.drv.deploy(lab.request(iid))
        assert lab.admin.compute.get_server(srv.id).status == "ACTIVE"   # untouched
    finally:
        lab.drv.destroy(alloc.handle)
    assert lab.leftovers(iid) == []
    assert [x for x in os_owned(lab.admin, lab.cfg["host_id"]) if x.startswith("flavor")] == []


@pytest.mark.openstack
def test_reserved_volume_or_host_port_is_refused_up_front(lab, uid):
    from mecorch.driverapi.model import PortSpec
    with pytest.raises(errors.UnsupportedAction, match="Cinder"):
        lab.drv.deploy(lab.request(f"r-{uid}", volumes=(VolumeSpec("db", 1, reserved=True),)))
    with pytest.raises(errors.UnsupportedAction):
        lab.drv.deploy(lab.request(f"r-{uid}", ports=(PortSpec(80, host_port=8080),)))
    assert lab.leftovers(f"r-{uid}") == []


@pytest.mark.openstack
def test_a_quota_too_small_is_a_409_and_capacity_honours_it(lab, uid):
    """A project whose core quota is 1: a 2-vCPU server is refused by Nova's
    quota (HTTP 403 there) and reaches mecorch as CapacityExceeded (409),
    with the port and flavor made for it removed; capacity() says 1 core."""
    admin = lab.admin
    project = admin.identity.create_project(name=f"mecorch-q-{uid}", domain_id="default")
    try:
        user = admin.identity.find_user("admin")
        role = admin.identity.find_role("admin")
        admin.grant_role(role.id, user=user.id, project=project.id)
        admin.compute.update_quota_set(project.id, cores=1, instances=2)
        from drivers.openstack_vim import OpenStackVIM
        drv = OpenStackVIM(lab.config(cloud=None, clouds_yaml=None, auth={
            "auth_url": "http://127.0.0.1:35357/v3", "username": "admin", "password": PASSWORD,
            "project_name": project.name, "user_domain_name": "Default",
            "project_domain_name": "Default"}))
        lab.drivers.append(drv)
        cap = drv.capacity()
        assert cap.cpu_total - cap.cpu_used == 1
        iid = f"q-{uid}"
        with pytest.raises(errors.CapacityExceeded) as err:
            drv.deploy(lab.request(iid, vcpu=2))
        assert err.value.status == 409 and "quota" in err.value.detail.lower()
        assert lab.leftovers(iid) == []
        assert [x for x in os_owned(admin, lab.cfg["host_id"]) if not x.startswith("image")] == []
        checks = {c.name: c for c in drv.check()}
        assert "cores 1 of 1 free" in checks["vim.quota"].detail
    finally:
        admin.identity.delete_project(project)


@pytest.mark.openstack
def test_nova_api_going_away_mid_deploy_is_503_and_leaves_nothing_once_back(lab, uid):
    iid = f"away-{uid}"
    result: dict = {}

    def deploy():
        try:
            result["alloc"] = lab.drv.deploy(lab.request(iid))
        except errors.MecorchError as e:
            result["error"] = e

    t = threading.Thread(target=deploy)
    t.start()
    deadline = time.monotonic() + 120
    while not list(lab.admin.compute.servers(name=f"^mecorch-{iid}$")):
        assert time.monotonic() < deadline and t.is_alive(), result
        time.sleep(0.5)
    aio("stop", "nova-api")
    try:
        t.join(300)
        err = result.get("error")
        assert isinstance(err, errors.BackendUnavailable), result
        assert err.status == 503 and "unreachable" in err.detail
    finally:
        aio("start", "nova-api")
    deadline = time.monotonic() + 180
    while True:
        try:
            list(lab.admin.compute.servers(limit=1))
            break
        except Exception:       # noqa: BLE001 - waiting for nova-api to answer again
            assert time.monotonic() < deadline, "nova-api did not come back"
            time.sleep(2)
    # What the reconciler does once the cloud is back: list, destroy orphans
    # (the server, found by its metadata, with the port it kept).
    found = {o.instance_id: o for o in lab.drv.list_instances()}
    assert iid in found and found[iid].handle["port_id"]
    lab.drv.destroy(found[iid].handle)
    assert lab.leftovers(iid) == []
    assert lab.drv.inspect(found[iid].handle).state == ObservedState.MISSING
