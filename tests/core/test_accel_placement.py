"""A VM named outright for an AppD that asks for hardware acceleration is
refused on a host whose VIM is TCG-only (the single node's placement, as
the MEO's placement does: tests/unit/test_placement.py). In-memory drivers."""

from __future__ import annotations

import yaml

from support.corelab import INST
from support.duallab import DUAL_APPD, dual_package, lab, onboard, problem  # noqa: F401


def test_explicit_vm_with_acceleration_needs_a_kvm_vim(lab):  # noqa: F811
    appd = yaml.safe_load(DUAL_APPD.read_text())
    vcd = dict(appd["virtualComputeDescriptor"], requestAdditionalCapabilities=[
        {"requestedAdditionalCapabilityName": "hardwareAcceleration", "supportMandatory": True}])
    appd["swImageDescriptor"][1]["virtualComputeDescriptor"] = vcd
    onboard(lab, dual_package(lab.tmp, swImageDescriptor=appd["swImageDescriptor"]))
    inst = lab.c.post(INST, {"appDId": "sample-dual"})[0]
    err = problem(lab.c.post, f"{INST}/{inst['id']}/instantiate",
                   {"deploymentType": "VM", "selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert err.status == 409
    assert "edge-b: its VIM is TCG-only and the AppD asks for hardware acceleration" in err.detail
    assert lab.c.get(f"{INST}/{inst['id']}")["instantiationState"] == "NOT_INSTANTIATED"
    lab.fakes["b-vim"].accel = "kvm"
    op, _ = lab.c.post(f"{INST}/{inst['id']}/instantiate",
                       {"deploymentType": "VM", "selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert lab.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
