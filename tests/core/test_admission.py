"""Everything known before the 202 is checked before the 202: each compute
driver declares what one instance may ask of it (`Capabilities`: vCPU and
memory bounds, disk, volumes, RETAIN volumes, host ports, protocols), the
core reads that at admission (placement: a host whose driver cannot take
the request is not a fit, with its reason), on one node and at an MEO from
the hosts' reports. The drivers' own checks use the same numbers, so they
never refuse a request the core admitted.

The drivers' declarations here are the real classes' (LibvirtVIM,
OpenStackVIM, DockerCIM), built without a backend: their constructors and
`capabilities()` touch none."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from support.fakes import FakeCompute
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import InvalidInput, MecorchError
from mecorch.kernel.states import DeploymentType
from mecorch.mepm.contract import HostInfo
from support.corelab import (  # noqa: F401 (env: a fixture)
    INST, VM_APPD, create, env, onboard)
from support.meolab import deploy, onboard as meo_onboard, system  # noqa: F401 (a fixture)

VM, CONTAINER = DeploymentType.VM, DeploymentType.CONTAINER


def libvirt_vim(tmp_path):
    from drivers.libvirt_vim.driver import LibvirtVIM
    return LibvirtVIM({"driver": "libvirt", "state_dir": str(tmp_path / "vim"),
                       "run_dir": str(tmp_path / "run")})


def openstack_vim(tmp_path):
    from drivers.openstack_vim.driver import OpenStackVIM
    return OpenStackVIM({"driver": "openstack", "cloud": "nowhere", "network": "n",
                         "state_dir": str(tmp_path / "vim")})


def docker_cim(tmp_path):
    from drivers.docker_cim.driver import DockerCIM
    return DockerCIM({"driver": "docker", "registry": "127.0.0.1:5000",
                      "state_dir": str(tmp_path / "cim")})


class Declaring(FakeCompute):
    """An in-memory backend that declares a real driver's capabilities and
    runs that driver's own request check in deploy (its late check)."""

    def __init__(self, real, late_check):
        super().__init__(real.capabilities().manner)
        self.real, self.late_check = real, late_check

    def capabilities(self):
        return self.real.capabilities()

    def deploy(self, request):
        self.late_check(request)
        return super().deploy(request)


def _libvirt_late(request):
    from drivers.libvirt_vim.request import validate_request
    validate_request(request)


def _openstack_late(request):
    from drivers.openstack_vim.driver import validate_request
    validate_request(request)


def _vm_appd_changes() -> dict:
    """sample-vm without its image's minRam (that one is the core's own
    check), so the driver's minimum is the one asked about."""
    sw = dict(yaml.safe_load(VM_APPD.read_text())["swImageDescriptor"])
    sw.pop("minRam")
    return {"swImageDescriptor": sw, "appTrafficRule": [], "appDNSRule": []}


def _refused(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    return info.value


SMALL_VM = {"deploymentType": "VM",
            "virtualComputeDescriptor": {"virtualMemory": {"virtualMemSize": 16}}}
RETAIN_VM = {"deploymentType": "VM", "virtualStorageDescriptor": [
    {"id": "sample-vm-data", "sizeOfStorage": 1, "deletionPolicy": "RETAIN"}]}


def _refused_on_one_node(env, real, late, body) -> tuple[dict, str]:
    """Instantiate sample-vm with `body` on a VIM declaring `real`'s
    capabilities: a 409 before the 202, nothing journalled or deployed.
    Returns the instance and the refusal's detail."""
    vim = Declaring(real, late)
    env.orch.inventory.get("default").attach("vim", vim)
    onboard(env, VM_APPD, **_vm_appd_changes())
    inst = create(env, "sample-vm")
    err = _refused(env.c.post, f"{INST}/{inst['id']}/instantiate", body)
    assert err.status == 409, err.body
    assert env.orch.store.list("op_occs") == [] and "deploy" not in vim.calls
    return inst, err.body["detail"]


def test_a_16_mb_vm_is_refused_before_the_202_by_the_libvirt_minimum(env):
    _, detail = _refused_on_one_node(env, libvirt_vim(env.tmp), _libvirt_late, SMALL_VM)
    assert "default: memory 16 MB is below its VIM's minimum of 32 MB" in detail
    assert detail.count("32 MB") == 1                   # one message, said once


def test_an_openstack_retain_volume_is_refused_before_the_202(env):
    inst, detail = _refused_on_one_node(env, openstack_vim(env.tmp), _openstack_late,
                                        RETAIN_VM)
    assert ("default: volume sample-vm-data is to be retained (RETAIN), but its VIM keeps "
            "no volume beyond its instance") in detail
    assert detail.count("RETAIN") == 1
    # the same VM without RETAIN is admitted and deployed
    ok = env.c.wait_op(env.c.post(f"{INST}/{inst['id']}/instantiate",
                                  {"deploymentType": "VM"})[0], timeout=10)
    assert ok["operationState"] == "COMPLETED", ok


def test_the_meo_refuses_before_its_202_by_the_hosts_declared_capabilities(system):
    s = system
    for hid in ("edge2", "edge3"):
        host = s.hosts[hid].inventory.get(hid)
        real = libvirt_vim(s.tmp / hid) if hid == "edge2" else openstack_vim(s.tmp / hid)
        late = _libvirt_late if hid == "edge2" else _openstack_late
        host.attach("vim", Declaring(real, late))
        s.meo.registry.beat(s.meo.registry.get(hid))
    pkg = meo_onboard(s, VM_APPD, **_vm_appd_changes())
    inst = s.c.post(INST, {"appDId": pkg["appDId"]})[0]
    err = _refused(s.c.post, f"{INST}/{inst['id']}/instantiate", SMALL_VM)
    assert err.status == 409, err.body
    assert "edge2: memory 16 MB is below its VIM's minimum of 32 MB" in err.body["detail"]
    assert "edge3: memory 16 MB is below its VIM's minimum of 32 MB" in err.body["detail"]
    err = _refused(s.c.post, f"{INST}/{inst['id']}/instantiate",
                   {**RETAIN_VM, "selectedMECHostInfo": [{"hostId": {"id": "edge3"}}]})
    assert err.status == 409 and "edge3: volume sample-vm-data is to be retained (RETAIN)" \
        in err.body["detail"], err.body
    assert s.meo.store.list("op_occs") == []
    # RETAIN goes to the host whose VIM keeps volumes
    iid, op = deploy(s, pkg["appDId"], **RETAIN_VM)
    assert op["operationState"] == "COMPLETED", op
    assert s.c.get(f"{INST}/{iid}")["hostId"] == "edge2"


def test_declared_capabilities_survive_the_host_report():
    from drivers.openstack_vim.driver import OpenStackVIM
    caps = OpenStackVIM({"cloud": "x", "network": "n"}).capabilities()
    from mecorch.mepm.contract import MannerCapacity
    info = HostInfo("h", {"VM": MannerCapacity(8, 0, 4096, 0, 100, 0, "", caps.admission())})
    back = HostInfo.from_dict(info.to_dict()).manners["VM"].capabilities("VM")
    assert dataclasses.replace(back, graceful_stop=caps.graceful_stop,
                               sized_volumes=caps.sized_volumes) == caps


# -- the declared numbers are the drivers' own -------------------------------------

def _vm(**kw) -> ResourceRequest:
    return ResourceRequest("i1", "app", VM, "img-1", **kw)


def _container(**kw) -> ResourceRequest:
    return ResourceRequest("i1", "app", CONTAINER, "127.0.0.1:5000/a/b:1", **kw)


def _late_checks(tmp_path):
    from drivers.docker_cim.plan import make_plan
    return [(libvirt_vim(tmp_path), _libvirt_late, _vm),
            (openstack_vim(tmp_path), _openstack_late, _vm),
            (docker_cim(tmp_path), make_plan, _container)]


EDGES = [dict(memory_mb=m) for m in (5, 6, 31, 32, 1 << 20, (1 << 20) + 1, 1 << 22,
                                     (1 << 22) + 1)] \
    + [dict(vcpu=v) for v in (0.005, 0.01, 64, 65, 256, 257, 1024, 1025)] \
    + [dict(disk_gb=d) for d in (4096, 4097, 65536, 65537, 1 << 20, (1 << 20) + 1)] \
    + [dict(volumes=tuple(VolumeSpec(f"v{i}", 1.0) for i in range(n))) for n in (20, 21)] \
    + [dict(volumes=(VolumeSpec("v", s),)) for s in (4096, 4097, 65536, 65537)] \
    + [dict(volumes=(VolumeSpec("v", 1.0, None, True),))] \
    + [dict(ports=(PortSpec(80, p),)) for p in ("tcp", "udp", "sctp")] \
    + [dict(ports=(PortSpec(80, "tcp", 8080),))]


@pytest.mark.parametrize("ask", EDGES, ids=repr)
def test_admission_and_each_drivers_late_check_agree(tmp_path, ask):
    """At each edge of each driver's declared limits: what admission lets
    through the driver's own check takes; what it refuses, the driver
    would have refused after the 202 (one message each: admission's)."""
    from mecorch.spec.capacity import unfit_for
    for drv, late, make in _late_checks(tmp_path):
        if drv.kind == "vim" and ask.get("vcpu") is not None and ask["vcpu"] % 1:
            continue                            # a VM's vCPUs are whole (the core's rule)
        request = make(**ask)
        refused = unfit_for(drv.capabilities(), request)
        try:
            late(request)
            late_refused = None
        except (InvalidInput, MecorchError) as e:
            late_refused = e.detail
        if type(drv).__name__ == "LibvirtVIM" and ask.get("ports") \
                and ask["ports"][0].host_port is not None:
            # libvirt ignored a host port after the 202; admission refuses it
            assert refused and late_refused is None
            continue
        assert (refused is None) == (late_refused is None), \
            (type(drv).__name__, ask, refused, late_refused)
