"""The Docker CIM against the real dockerd and the local registry.

Each test uses its own host id (label), network and state dir, removes what
it made, and asserts through the Docker API that nothing of its instances
is left. Nothing here is mocked: the driver is proven on the daemon. The
ComputeDriver contract itself (no side effects in the constructor, the
lifecycle, each image error, daemon down, bad input, rollback, restart,
destroy of what is gone) is in tests/conformance/; this file keeps what is
Docker's own.
"""

from __future__ import annotations

import hashlib
import socket
import time
import urllib.error
import urllib.request

import pytest

from drivers.docker_cim import DockerCIM
from mecorch.driverapi.contracts import load_driver
from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, Conflict, ImageNotFound, ImageUnavailable, IntegrityError,
    InvalidInput)
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec
from mecorch.kernel.states import DeploymentType, ObservedState
from support.dockerlab import (  # noqa: F401
    api, cim, config, leftovers, request, sample)
from support.lab import free_port

pytestmark = pytest.mark.docker


def network_exists(api, name: str) -> bool:
    return any(n["Name"] == name for n in api.networks(names=[name]))


def http_get(url: str, wait_s: float = 10.0) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_entry_point_loads_without_connecting(config):
    driver = load_driver("cim", {**config, "docker_host": "unix:///nonexistent.sock"})
    assert isinstance(driver, DockerCIM) and driver.kind == "cim"
    caps = driver.capabilities()
    assert caps.manner == DeploymentType.CONTAINER and caps.sized_volumes is False
    assert caps.reserved_volumes and caps.published_ports


def test_check_reports_daemon_registry_and_network(cim):
    checks = {c.name: c for c in cim.check()}
    assert checks["docker daemon"].ok, checks["docker daemon"].detail
    assert "20.10" in checks["docker daemon"].detail or "Docker Engine" in checks["docker daemon"].detail
    assert checks["container image repository"].ok
    assert checks["docker network driver"].ok
    assert checks["pause image source"].ok


def test_deploy_reach_limits_stop_start_destroy(cim, api, sample, uid, config):
    iid = f"inst-{uid}"
    port = free_port()
    alloc = cim.deploy(request(
        iid, sample["ref"], vcpu=0.5, memory_mb=64,
        volumes=(VolumeSpec("data", size_gb=0.5, mount_path="/data"),),
        ports=(PortSpec(80, host_port=port),), env={"GREETING": "hi"}))

    # The HTTP service, through the published loopback port and directly.
    ip = alloc.addresses[0].ip
    assert alloc.addresses[0].network == config["network"]
    assert http_get(f"http://127.0.0.1:{port}/").strip() == sample["body"]
    assert http_get(f"http://{ip}/").strip() == sample["body"]

    # Limits, namespace sharing, labels and mounts, as the daemon sees them.
    handle = alloc.handle
    app = api.inspect_container(handle["app"]["id"])
    pause = api.inspect_container(handle["pause"]["id"])
    assert app["HostConfig"]["NanoCpus"] == 500_000_000
    assert app["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert app["HostConfig"]["NetworkMode"] == f"container:{pause['Id']}"
    assert "GREETING=hi" in app["Config"]["Env"]
    assert app["Config"]["Labels"]["mecorch.instance"] == iid
    assert app["Config"]["Labels"]["mecorch.role"] == "app"
    assert app["Config"]["Labels"]["mecorch.host"] == config["host_id"]
    mounts = {m["Destination"]: m for m in app["Mounts"]}
    assert mounts["/data"]["Type"] == "volume"
    assert mounts["/data"]["Name"] == f"mecorch.{iid}.data"
    assert pause["State"]["Running"]
    assert pause["Config"]["Image"] == "mecorch/pause:1"
    assert pause["Config"]["Labels"]["mecorch.role"] == "pause"
    assert pause["NetworkSettings"]["Networks"][config["network"]]["IPAddress"] == ip
    assert pause["HostConfig"]["PortBindings"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}]
    vol = api.inspect_volume(f"mecorch.{iid}.data")
    assert vol["Labels"]["mecorch.instance"] == iid
    assert vol["Labels"]["mecorch.reserved"] == "false"
    net = api.inspect_network(config["network"])
    assert net["Driver"] == "bridge" and net["Labels"]["mecorch.network"] == "true"
    assert alloc.storage[0]["id"] == f"mecorch.{iid}.data"
    assert alloc.vcpu == 0.5 and alloc.memory_mb == 64

    # Observed state, listing by label and capacity accounting.
    assert cim.inspect(handle).state == ObservedState.RUNNING
    listed = {o.instance_id: o for o in cim.list_instances()}
    assert listed[iid].state == ObservedState.RUNNING
    assert listed[iid].handle["app"]["id"] == handle["app"]["id"]
    assert listed[iid].handle["pause"]["id"] == handle["pause"]["id"]
    cap = cim.capacity()
    assert cap.cpu_total >= 1 and cap.cpu_used >= 0.5 and cap.memory_mb_used >= 64
    assert cap.disk_gb_total > cap.disk_gb_used > 0

    # Graceful stop: the entrypoint traps TERM, so no kill (exit 137).
    cim.stop(handle, timeout_s=10)
    state = api.inspect_container(handle["app"]["id"])["State"]
    assert not state["Running"] and state["ExitCode"] == 0
    assert cim.inspect(handle).state == ObservedState.STOPPED
    cim.stop(handle, timeout_s=10)                 # already stopped: fine
    # The pause container keeps the namespace: same address after start.
    cim.start(handle)
    assert cim.inspect(handle).state == ObservedState.RUNNING
    assert http_get(f"http://{ip}/").strip() == sample["body"]

    cim.destroy(handle)
    assert leftovers(api, iid) == []
    assert cim.inspect(handle).state == ObservedState.MISSING
    assert iid not in {o.instance_id for o in cim.list_instances()}
    cim.destroy(handle)                            # idempotent
    cim.stop(handle, timeout_s=1)                  # gone: success


def test_capacity_reads_limit_labels_and_inspects_app_containers_without_them(cim, api,
                                                                              sample, uid):
    # The app container carries the limits it was made with as labels, equal
    # to its HostConfig: capacity() counts it from the listing alone.
    before = cim.capacity()
    alloc = cim.deploy(request(f"cap-{uid}", sample["ref"], vcpu=0.5, memory_mb=48))
    unlabeled = None
    try:
        app = api.inspect_container(alloc.handle["app"]["id"])
        labels = app["Config"]["Labels"]
        assert labels["mecorch.nano-cpus"] == str(app["HostConfig"]["NanoCpus"]) == "500000000"
        assert labels["mecorch.mem-bytes"] == str(app["HostConfig"]["Memory"]) == str(48 << 20)
        mid = cim.capacity()
        assert mid.cpu_used - before.cpu_used == pytest.approx(0.5)
        assert mid.memory_mb_used - before.memory_mb_used == 48
        # An app container of an older mecorch (no limit labels; another host
        # id: every mecorch app container on the daemon uses its resources)
        # is counted by inspecting it.
        hc = api.create_host_config(nano_cpus=250_000_000, mem_limit=32 << 20)
        unlabeled = api.create_container(
            sample["ref"], name=f"mecorch-old-{uid}-app", host_config=hc,
            labels={"mecorch.instance": f"old-{uid}", "mecorch.host": f"other-{uid}",
                    "mecorch.role": "app"})["Id"]
        after = cim.capacity()
        assert after.cpu_used - mid.cpu_used == pytest.approx(0.25)
        assert after.memory_mb_used - mid.memory_mb_used == 32
    finally:
        if unlabeled:
            api.remove_container(unlabeled, force=True)
        cim.destroy(alloc.handle)
    assert cim.capacity().cpu_used == pytest.approx(before.cpu_used)


def test_reserved_volume_survives_destroy_and_is_reused(cim, api, sample, uid):
    iid = f"keep-{uid}"
    vols = (VolumeSpec("db", mount_path="/db", reserved=True), VolumeSpec("tmp", mount_path="/t"))
    alloc = cim.deploy(request(iid, sample["ref"], volumes=vols))
    cim.destroy(alloc.handle)
    kept = f"mecorch.{iid}.db"
    try:
        assert leftovers(api, iid) == [f"volume {kept}"]
        assert api.inspect_volume(kept)["Labels"]["mecorch.reserved"] == "true"
        # A new life of the same instance gets its reserved volume back,
        # and a failed deploy does not remove a volume it did not make.
        with pytest.raises(BackendError):
            cim.deploy(request(iid, sample["ref"], volumes=vols, command=("/no/such/cmd",)))
        assert leftovers(api, iid) == [f"volume {kept}"]
        alloc = cim.deploy(request(iid, sample["ref"], volumes=vols))
        cim.destroy(alloc.handle)
        assert leftovers(api, iid) == [f"volume {kept}"]
    finally:
        api.remove_volume(kept)
    assert leftovers(api, iid) == []


def test_missing_image_creates_nothing(cim, api, sample, uid, config):
    iid = f"miss-{uid}"
    ref = f"{sample['registry']}/mecorch-test/absent-{uid}:1"
    with pytest.raises(ImageNotFound, match="not in the container image repository"):
        cim.deploy(request(iid, ref, volumes=(VolumeSpec("v"),)))
    with pytest.raises(ImageNotFound):                  # another registry is not ours
        cim.deploy(request(iid, f"registry.example:5000/x/{uid}:1"))
    assert leftovers(api, iid) == []
    assert not network_exists(api, config["network"])


def test_import_unavailable_and_remove_image(cim, api, sample, uid, config):
    iid = f"unav-{uid}"
    ref = f"{sample['registry']}/mecorch-test/x-{uid}:1"
    with open(sample["tar"], "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    try:
        with pytest.raises(IntegrityError):
            cim.import_image(ref, sample["tar"], "0" * 64)
        with pytest.raises(ImageNotFound):          # nothing was pushed
            cim.check_image(ref)
        record = cim.import_image(ref, sample["tar"], sha)
        assert record["available"] and record["digest"].startswith("sha256:")
        assert cim.check_image(ref)["digest"] == record["digest"]

        cim.set_image_available(ref, False)
        with pytest.raises(ImageUnavailable, match="not available"):
            cim.deploy(request(iid, ref, ports=(PortSpec(80, host_port=free_port()),)))
        assert leftovers(api, iid) == []
        assert not network_exists(api, config["network"])

        # Someone pushes other bytes under the same tag: refused.
        cim.set_image_available(ref, True)
        cim.open()                                  # builds mecorch/pause:1
        repo = ref.rsplit(":", 1)[0]
        api.tag("mecorch/pause:1", repo, "1")
        for _ in api.push(repo, "1", stream=True, decode=True):
            pass
        api.remove_image(ref)
        with pytest.raises(IntegrityError):
            cim.check_image(ref)
    finally:
        cim.remove_image(ref)
    with pytest.raises(ImageNotFound):
        cim.check_image(ref)
    cim.remove_image(ref)                           # already gone: success
    assert cim.catalog.get(ref) is None


def test_registry_down_gives_backend_unavailable(config, api, uid):
    port = free_port()                                  # nothing listens there
    cim = DockerCIM({**config, "registry": f"127.0.0.1:{port}"})
    iid = f"noreg-{uid}"
    with pytest.raises(BackendUnavailable, match="cannot reach the registry"):
        cim.deploy(request(iid, f"127.0.0.1:{port}/mecorch/sample-http:1.0"))
    checks = {c.name: c for c in cim.check()}
    assert not checks["container image repository"].ok
    assert leftovers(api, iid) == []
    assert not network_exists(api, config["network"])
    cim.close()


def test_port_taken_rolls_back(cim, api, sample, uid):
    iid = f"port-{uid}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BackendError) as err:
            cim.deploy(request(iid, sample["ref"], volumes=(VolumeSpec("v"),),
                               ports=(PortSpec(80, host_port=port),)))
    assert "start mecorch-" in err.value.detail
    assert leftovers(api, iid) == []


def test_kubernetes_command_becomes_the_entrypoint(cim, api, sample, uid):
    """A Pod's `command` reaches Docker as the entrypoint, its `args` as Cmd."""
    iid = f"ep-{uid}"
    port = free_port()
    alloc = cim.deploy(request(
        iid, sample["ref"], ports=(PortSpec(80, host_port=port),),
        extra={"entrypoint": ["/bin/sh", "-c"]},
        command=("echo from-entrypoint > /www/index.html && exec /bin/serve",)))
    try:
        assert http_get(f"http://127.0.0.1:{port}/").strip() == "from-entrypoint"
        app = api.inspect_container(alloc.handle["app_id"] if "app_id" in alloc.handle
                                    else f"mecorch-{iid}-app")
        assert app["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
    finally:
        cim.destroy(alloc.handle)
    assert leftovers(api, iid) == []


@pytest.mark.parametrize("bad", [
    {"extra": {"entrypoint": "sh -c"}},
    {"extra": {"entrypoint": ["sh", "a\nb"]}},
    {"instance_id": "-rf"},
    {"env": {"BAD NAME": "x"}},
    {"volumes": (VolumeSpec("data", mount_path="relative"),)},
    {"volumes": (VolumeSpec("a", mount_path="/x"), VolumeSpec("b", mount_path="/x"))},
    {"volumes": (VolumeSpec("a/b"),)},
    {"ports": (PortSpec(80, protocol="icmp"),)},
    {"ports": (PortSpec(80, host_port=70000),)},
    {"memory_mb": 1},
    {"command": ("sh", "bad\nline")},
    {"image": "127.0.0.1:5000/UPPER:1"},
])
def test_bad_input_refused_before_anything(cim, api, sample, uid, config, bad):
    fields = {"instance_id": f"bad-{uid}", "app_d_id": "a", "manner": DeploymentType.CONTAINER,
              "image": sample["ref"], **bad}
    with pytest.raises(InvalidInput):
        cim.deploy(ResourceRequest(**fields))
    assert leftovers(api, f"bad-{uid}") == []
    assert not network_exists(api, config["network"])


def test_bad_handles_refused(cim):
    for handle in ({"instance_id": "x", "app": {"id": "../../x"}},):
        with pytest.raises(InvalidInput):
            cim.destroy(handle)


def test_second_deploy_of_same_instance_conflicts_and_harms_nothing(cim, api, sample, uid):
    iid = f"dup-{uid}"
    vols = (VolumeSpec("data", mount_path="/data"),)
    alloc = cim.deploy(request(iid, sample["ref"], volumes=vols))
    with pytest.raises(Conflict):
        cim.deploy(request(iid, sample["ref"], volumes=vols))
    # The first instance is intact: both containers and its volume.
    assert cim.inspect(alloc.handle).state == ObservedState.RUNNING
    assert sorted(leftovers(api, iid)) == sorted([
        f"container /mecorch-{iid}-app", f"container /mecorch-{iid}-pause",
        f"volume mecorch.{iid}.data"])
    assert http_get(f"http://{alloc.addresses[0].ip}/").strip() == sample["body"]
    cim.destroy(alloc.handle)
    assert leftovers(api, iid) == []


def test_restarted_driver_finds_and_removes_instances_by_label(cim, api, sample, uid, config):
    iid = f"rec-{uid}"
    cim.deploy(request(iid, sample["ref"], volumes=(VolumeSpec("data"),)))
    cim.close()
    fresh = DockerCIM(config)                       # no store, no handle: labels only
    found = {o.instance_id: o for o in fresh.list_instances()}
    assert list(found) == [iid] and found[iid].state == ObservedState.RUNNING
    assert found[iid].handle["volumes"] == [{"name": f"mecorch.{iid}.data", "reserved": False}]
    # A crash between pause and app leaves a pause container: listed as MISSING.
    api.remove_container(found[iid].handle["app"]["id"], force=True)
    (obs,) = fresh.list_instances()
    assert obs.state == ObservedState.MISSING and "pause" in obs.handle
    fresh.destroy(obs.handle)
    assert leftovers(api, iid) == [] and fresh.list_instances() == []
    fresh.close()


def test_lean_listing_matches_docker_py_on_what_the_driver_reads(cim, api, sample, uid):
    """list_containers keeps Id, Names, State, Status, mecorch's labels and the
    endpoints' addresses, equal to what docker-py's full listing says."""
    from drivers.docker_cim.backend import list_containers
    iid = f"lean-{uid}"
    alloc = cim.deploy(request(iid, sample["ref"]))
    try:
        flt = {"label": [f"mecorch.instance={iid}"]}
        full = {c["Id"]: c for c in api.containers(all=True, filters=flt)}
        lean = list_containers(api, flt)
        assert len(lean) == len(full) == 2          # the app and its pause container
        for c in lean:
            f = full[c["Id"]]
            assert set(c) == {"Id", "Names", "Labels", "State", "Status", "NetworkSettings"}
            assert (c["Names"], c["State"]) == (f["Names"], f["State"])
            assert c["Labels"] == {k: v for k, v in f["Labels"].items()
                                   if k.startswith("mecorch.")}
            for net, ep in c["NetworkSettings"]["Networks"].items():
                f_ep = f["NetworkSettings"]["Networks"][net]
                assert ep == {"IPAddress": f_ep["IPAddress"], "MacAddress": f_ep["MacAddress"]}
        pause = next(c for c in lean if c["Labels"]["mecorch.role"] == "pause")
        assert pause["NetworkSettings"]["Networks"][cim.network]["IPAddress"] \
            == alloc.addresses[0].ip
    finally:
        cim.destroy(alloc.handle)


def test_lean_listing_error_is_the_daemons(api):
    """A filter dockerd refuses is a BackendError with the daemon's sentence, as
    through docker-py's own listing."""
    from drivers.docker_cim.backend import backend_errors, list_containers
    with pytest.raises(BackendError, match="list x: Invalid filter 'no-such-filter'"):
        with backend_errors("list x"):
            list_containers(api, {"no-such-filter": ["1"]})


def test_lean_decoding_keeps_labels_that_look_like_docker_fields():
    """An image's labels named like Docker's own fields are labels, not a
    container or an endpoint to trim: mecorch's labels beside them survive."""
    import json
    from drivers.docker_cim.backend import _lean
    raw = json.dumps([{
        "Id": "c1", "Names": ["/a"], "State": "running", "Status": "Up", "Image": "x",
        "Labels": {"Id": "1", "Names": "n", "IPPrefixLen": "16", "EndpointID": "e",
                   "mecorch.instance": "i1", "mecorch.role": "app"},
        "NetworkSettings": {"Networks": {"n1": {"EndpointID": "e1", "IPPrefixLen": 16,
                                                "IPAddress": "10.0.0.2", "MacAddress": "m",
                                                "Gateway": "10.0.0.1"}}},
        "Mounts": [{"Type": "volume"}]}])
    assert json.loads(raw, object_hook=_lean) == [{
        "Id": "c1", "Names": ["/a"], "State": "running", "Status": "Up",
        "Labels": {"mecorch.instance": "i1", "mecorch.role": "app"},
        "NetworkSettings": {"Networks": {"n1": {"IPAddress": "10.0.0.2", "MacAddress": "m"}}}}]


def test_a_network_made_with_cim_subnet_has_its_gateway(config, api, uid):
    """Docker makes a network with a subnet and no gateway without naming
    the gateway in its IPAM config; the bridge has the subnet's first
    address all the same, and that is the apps' gateway (their DNS and
    Mp1): deploys used to fail with "no gateway address"."""
    import ipaddress
    from conftest import run
    octet = int(hashlib.sha256(uid.encode()).hexdigest(), 16) % 250 + 1
    subnet = f"10.232.{octet}.0/29"
    driver = DockerCIM({**config, "subnet": subnet})
    try:
        gateway = driver.app_gateway()
        assert gateway == str(next(ipaddress.ip_network(subnet).hosts()))
        net = api.inspect_network(config["network"])    # (Docker 20.10-26: no Gateway in it)
        bridge = run("ip", "-4", "-o", "addr", "show", f"br-{net['Id'][:12]}").stdout
        assert f"inet {gateway}/29" in bridge, bridge
    finally:
        driver.close()
        api.remove_network(config["network"])
