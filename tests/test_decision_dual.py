"""The whole deployment decision table, without backends.

- every form of the deployment type identifier, under both its names, in
  every place it can appear (instantiate, orchestrationInfo's keyword in
  TOSCA and Kubernetes documents, CreateAppPkg, terminate, package DELETE);
- every pair of signals that can disagree: a 400 naming both;
- every unknown value: a 400 listing the accepted forms;
- dual-format AppDs: each manner's own image and needs;
- the manner policy (`choose_manner`) over every host mix, room and
  preference, as an explicit table and as invariants over the whole cross
  product;
- the same through the real REST API and core (fake drivers, two hosts:
  one without a VIM): onboarding records both manners, the chosen manner
  and its reason are on the instance and the op occurrence.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from fakes import FakeCompute, FakeMep
from mecorch.kernel import config
from mecorch.spec import decision
from mecorch.api import make_server
from mecorch.kernel.client import ApiError, Client
from mecorch.spec.decision import (
    ACCEPTED_FORMS, Decision, HostFacts, appd_for_manner, accel_required, choose_manner,
    decide_manner, deployment_type, named_type, preference_for, resource_request)
from mecorch.kernel.errors import CapacityExceeded, InvalidInput
from mecorch.spec.capacity import Need
from mecorch.mepm.orchestrator import Orchestrator
from mecorch.package import build_package, open_package
from mecorch.kernel.states import DeploymentType
from test_core_orchestration import INST, PKGS, POD, TOSCA, _fake_docker_tar

VM, CONTAINER = DeploymentType.VM, DeploymentType.CONTAINER
REPO = Path(__file__).resolve().parents[1]
DUAL_APPD = REPO / "examples/sample-dual-app/Definitions/appd.yaml"
QCOW2 = b"QFI\xfb" + b"\0" * 508

# every accepted form of the identifier and what it means
FORMS = [("VM", VM), ("vm", VM), ("Vm", VM), ("vM", VM), (0, VM), ("0", VM),
         ("CONTAINER", CONTAINER), ("container", CONTAINER), ("Container", CONTAINER),
         (1, CONTAINER), ("1", CONTAINER)]
# forms that are not deployment types (JSON booleans are not bits)
BAD = ["", "V M", " vm", "vm ", "VMs", "KVM", "docker", "2", "01", "-1", "1.0", "0x1",
       2, -1, 1.0, 0.0, True, False, None, [], ["VM"], {"VM": 1}, "x" * 500, "\u0131vm"]


def refused(fn, *args, **kw) -> str:
    with pytest.raises(InvalidInput) as e:
        fn(*args, **kw)
    assert e.value.status == 400
    return e.value.detail


def tosca(keyword=None) -> dict:
    doc = yaml.safe_load(TOSCA)
    if keyword is not None:
        doc["metadata"] = {**(doc.get("metadata") or {}), "orchestrationType": keyword}
    return doc


def pod(keyword=None) -> dict:
    doc = yaml.safe_load(POD)
    if keyword is not None:
        doc["metadata"].setdefault("annotations", {})["mecorch/orchestration-type"] = keyword
    return doc


# ---------------------------------------------------------------- the identifier
@pytest.mark.parametrize("value, manner", FORMS)
def test_every_form_under_both_names(value, manner):
    assert deployment_type(value) is manner
    for name in ("deploymentType", "deployMethod"):
        d = decide_manner({name: value}, None)
        assert (d.manner, d.source, d.signals) == (manner, name, {name: manner})
        assert d.reason == f"{name} says {manner.value}"
        assert named_type({name: value}, "x") == (manner, name)
    # both names agreeing, in different forms
    other = {VM: "vm", CONTAINER: 1}[manner]
    d = decide_manner({"deploymentType": value, "deployMethod": other}, None)
    assert d.manner is manner and d.source == "deploymentType"
    assert set(d.signals) == {"deploymentType", "deployMethod"}


@pytest.mark.parametrize("value", [b for b in BAD if b is not None])  # None: absent
def test_unknown_values_list_the_accepted_forms_everywhere(value):
    for name in ("deploymentType", "deployMethod"):
        detail = refused(decide_manner, {name: value}, None)
        assert detail.startswith(f"{name}: ") and detail.endswith(f"accepted: {ACCEPTED_FORMS}")
        assert len(detail) < 250
        refused(named_type, {name: value}, "x")
    # inside orchestrationInfo: TOSCA metadata and the Kubernetes annotation
    detail = refused(decide_manner, {"orchestrationInfo": tosca(value)}, None)
    assert detail.startswith("orchestrationInfo.metadata.orchestrationType: ")
    assert detail.endswith(ACCEPTED_FORMS)
    detail = refused(decide_manner, {"orchestrationInfo": pod(value)}, None)
    assert detail.startswith(
        "orchestrationInfo.metadata.annotations[mecorch/orchestration-type]: ")
    assert detail.endswith(ACCEPTED_FORMS)


def test_null_is_absent():
    assert named_type({"deploymentType": None, "deployMethod": None}, "x") == (None, None)
    d = decide_manner({"deploymentType": None, "deployMethod": None}, "VM")
    assert d.source == "onboarding"
    assert decide_manner({"orchestrationInfo": tosca(None)}, None).source == "orchestrationInfo"


# ---------------------------------------------------------------- orchestration type keyword
@pytest.mark.parametrize("value, manner", FORMS)
def test_keyword_in_tosca_metadata_says_the_manner(value, manner):
    d = decide_manner({"orchestrationInfo": tosca(value)}, None)
    assert (d.manner, d.source) == (manner, "orchestrationType")
    assert d.reason == f"orchestrationInfo's orchestration type says {manner.value}"
    # as YAML text too
    assert decide_manner({"orchestrationInfo": yaml.safe_dump(tosca(value))}, None).manner \
        is manner


@pytest.mark.parametrize("value", ["container", "CONTAINER", "1", 1])
def test_keyword_in_kubernetes_annotation(value):
    d = decide_manner({"orchestrationInfo": pod(value)}, None)
    assert (d.manner, d.source) == (CONTAINER, "orchestrationType")


@pytest.mark.parametrize("value", ["vm", "VM", "0", 0])
def test_a_pod_is_never_a_vm(value):
    detail = refused(decide_manner, {"orchestrationInfo": pod(value)}, None)
    assert "contradicting deployment signals: orchestrationInfo is a Kubernetes Pod " \
           "(CONTAINER) but its orchestration type (mecorch/orchestration-type) says VM" \
           in detail


def test_a_tosca_template_of_a_container_describes_the_container():
    """TOSCA says either manner: with orchestrationType CONTAINER its sizes
    are the container's; deploying it as a VM is refused."""
    dual = yaml.safe_load(DUAL_APPD.read_text())
    doc = {"tosca_definitions_version": "tosca_simple_yaml_1_3",
           "metadata": {"orchestrationType": "container"},
           "topology_template": {"node_templates": {"app": {
               "type": "Application",
               "capabilities": {"host": {"properties": {"num_cpus": 2, "mem_size": "128 MB"}}}}}}}
    assert decide_manner({"orchestrationInfo": doc}, ["CONTAINER", "VM"]).manner is CONTAINER
    r = resource_request("i1", dual, CONTAINER, "127.0.0.1:5000/a/b:1", {"orchestrationInfo": doc})
    assert (r.manner, r.vcpu, r.memory_mb) == (CONTAINER, 2.0, 128)
    assert "orchestrationInfo is a TOSCA service template (CONTAINER) but the instance is " \
           "deployed as VM" in refused(resource_request, "i1", dual, VM, "sample-dual",
                                       {"orchestrationInfo": doc})


# ---------------------------------------------------------------- disagreeing pairs
# Each signal, as a request fragment (and the recorded manner for
# "onboarding"), in the form that says `m`.
def _signal(name: str, m: DeploymentType):
    if name == "deploymentType":
        return {"deploymentType": "vm" if m is VM else 1}, None
    if name == "deployMethod":
        return {"deployMethod": 0 if m is VM else "Container"}, None
    if name == "orchestrationType":
        return {"orchestrationInfo": tosca("0" if m is VM else "1")}, None
    if name == "orchestrationInfo":
        return {"orchestrationInfo": TOSCA if m is VM else POD}, None
    return {}, m                                                     # onboarding


PHRASE = {
    "deploymentType": "deploymentType says {}",
    "deployMethod": "deployMethod says {}",
    "orchestrationType": "orchestrationInfo's orchestration type says {}",
    "orchestrationInfo": "orchestrationInfo is a ",
    "onboarding": "the app was onboarded as {}",
}
PAIRS = [p for p in itertools.combinations(decision.SIGNALS, 2)
         # the keyword and the kind are one orchestrationInfo: they cannot both be
         # given (their own contradiction, a Pod saying VM, is tested above)
         if set(p) != {"orchestrationType", "orchestrationInfo"}]


@pytest.mark.parametrize("a, b", PAIRS)
@pytest.mark.parametrize("ma", [VM, CONTAINER])
def test_every_disagreeing_pair_is_a_400_naming_both(a, b, ma):
    mb = VM if ma is CONTAINER else CONTAINER
    ra, reca = _signal(a, ma)
    rb, recb = _signal(b, mb)
    request = {**ra, **rb}
    detail = refused(decide_manner, request, reca or recb)
    assert detail.startswith("contradicting deployment signals")
    for name, m in ((a, ma), (b, mb)):
        assert PHRASE[name].format(m.value) in detail, (name, detail)
    # and agreeing, the same pair decides with the first one's manner
    rb, recb = _signal(b, ma)
    d = decide_manner({**ra, **rb}, reca or recb)
    assert d.manner is ma and d.source == a


def test_three_signals_name_which_agree_and_which_not():
    detail = refused(decide_manner, {"deploymentType": "VM", "deployMethod": "1",
                                     "orchestrationInfo": TOSCA}, None)
    assert detail == ("contradicting deployment signals: deploymentType says VM and "
                      "orchestrationInfo is a TOSCA service template (VM) but deployMethod "
                      "says CONTAINER")


def test_named_type_disagreement_in_other_requests():
    for what in ("CreateAppPkg", "TerminateAppRequest", "the delete request"):
        detail = refused(named_type, {"deploymentType": "VM", "deployMethod": 1}, what)
        assert detail == (f"contradicting deployment signals in {what}: deploymentType says "
                          "VM but deployMethod says CONTAINER")


# ---------------------------------------------------------------- dual-format decisions
BOTH = ["CONTAINER", "VM"]


def test_dual_format_accepts_either_named_manner():
    for value, manner in FORMS:
        d = decide_manner({"deploymentType": value}, BOTH)
        assert d.manner is manner and "onboarding" not in d.signals
        assert "the app is dual-format" in d.reason
    assert decide_manner({"orchestrationInfo": TOSCA}, BOTH).manner is VM
    assert decide_manner({"orchestrationInfo": POD}, BOTH).manner is CONTAINER


def test_dual_format_without_a_signal_asks_the_policy():
    asked = []

    def choose(manners):
        asked.append(manners)
        return VM, "because"
    d = decide_manner({}, BOTH, choose)
    assert d == Decision(VM, "policy", {}) and d.reason == "because"
    assert asked == [(CONTAINER, VM)]
    assert "dual-format" in refused(decide_manner, {}, BOTH)          # no policy given
    # a named manner never asks the policy
    decide_manner({"deploymentType": 1}, BOTH, lambda m: pytest.fail("asked"))


def test_dual_appd_gives_each_manner_its_image_and_needs():
    appd = yaml.safe_load(DUAL_APPD.read_text())
    c = appd_for_manner(appd, CONTAINER)
    v = appd_for_manner(appd, "vm")
    assert c["swImageDescriptor"]["containerFormat"] == "DOCKER"
    assert v["swImageDescriptor"]["containerFormat"] == "BARE"
    assert "virtualComputeDescriptor" not in c["swImageDescriptor"]
    rc = resource_request("i", appd, CONTAINER, "127.0.0.1:5000/x/y:1", {})
    rv = resource_request("i", appd, VM, "sample-dual", {})
    assert (rc.vcpu, rc.memory_mb, rc.disk_gb, rc.volumes) == (0.5, 64, 0.1, ())
    assert (rv.vcpu, rv.memory_mb, rv.disk_gb) == (1.0, 256, 1.0)
    assert [x.name for x in rv.volumes] == ["sample-dual-data"]
    single = copy.deepcopy(appd)
    single["swImageDescriptor"] = appd["swImageDescriptor"][0]
    assert appd_for_manner(single, VM) is single             # single-image AppDs as they are
    only_c = dict(appd, swImageDescriptor=appd["swImageDescriptor"][:1])
    assert "has no VM image" in refused(appd_for_manner, only_c, VM)


def test_hardware_acceleration_request():
    appd = yaml.safe_load(DUAL_APPD.read_text())
    assert not accel_required(appd)
    cap = {"requestedAdditionalCapabilityName": "hardwareAcceleration", "supportMandatory": True}
    appd["swImageDescriptor"][1]["virtualComputeDescriptor"] = {
        **appd["virtualComputeDescriptor"], "requestAdditionalCapabilities": [cap]}
    assert accel_required(appd) and not accel_required(appd, CONTAINER)
    appd["swImageDescriptor"][1]["virtualComputeDescriptor"][
        "requestAdditionalCapabilities"] = [{**cap, "supportMandatory": False}]
    assert not accel_required(appd)                                # preferred, not required


# ---------------------------------------------------------------- the policy
def host(hid, cim=True, vim=True, accel="tcg", cpu=8.0, mem=8192, disk=50.0) -> HostFacts:
    return HostFacts(hid, cim, vim, accel, cpu, mem, disk)


SMALL = {CONTAINER: Need(0.5, 64, 0.1), VM: Need(1, 256, 2.0)}


@pytest.mark.parametrize("hosts, pref, accel, manner, says", [
    # a host without a VIM cannot take a VM
    ([host("a", vim=False)], None, False, CONTAINER,
     "CONTAINER: only that manner fits (CONTAINER on a; no host can take VM (a: no VIM))"),
    ([host("a", vim=False)], "vm", False, CONTAINER, "no host can take VM (a: no VIM)"),
    # no CIM: only a VM
    ([host("b", cim=False)], "container", False, VM,
     "VM: only that manner fits (VM on b; no host can take CONTAINER (b: no CIM"),
    # both fit: the preference decides; without one, the smaller footprint
    ([host("b")], None, False, CONTAINER,
     "CONTAINER: both manners fit (CONTAINER on b; VM on b); no preference configured, "
     "so the smaller footprint"),
    ([host("b")], "vm", False, VM,
     "VM: both manners fit (CONTAINER on b; VM on b); orchestrator.prefer prefers vm"),
    ([host("b")], "container", False, CONTAINER, "orchestrator.prefer prefers container"),
    ([host("a", vim=False), host("b")], "vm", False, VM,
     "(CONTAINER on a, b; VM on b; VM not on a: no VIM)"),
    # TCG-only VIM and an AppD asking for hardware acceleration: no VM there
    ([host("b", accel="tcg")], "vm", True, CONTAINER,
     "b: its VIM is TCG-only and the AppD asks for hardware acceleration"),
    ([host("b", accel="")], "vm", True, CONTAINER, "not probed for KVM yet"),
    ([host("b", accel="kvm")], "vm", True, VM, "both manners fit"),
    ([host("b", accel="tcg"), host("k", cim=False, accel="kvm")], "vm", True, VM, "VM on k"),
    # room: a host without room for the VM's needs
    ([host("b", mem=200)], "vm", False, CONTAINER, "b: memory 256 MB > 200 MB free"),
    ([host("b", cpu=0.7)], "vm", False, CONTAINER, "b: vCPU 1 > 0.7 free"),
    ([host("b", disk=1.0)], "vm", False, CONTAINER, "b: disk 2 GB > 1.0 GB free"),
    ([host("a", vim=False, mem=32), host("b", cim=False)], "container", False, VM,
     "no host can take CONTAINER (a: memory 64 MB > 32 MB free; b: no CIM (container engine))"),
])
def test_policy_table(hosts, pref, accel, manner, says):
    got, reason = choose_manner([CONTAINER, VM], hosts, pref, SMALL, accel,
                                "orchestrator.prefer")
    assert got is manner, reason
    assert says in reason, reason


def test_policy_refusals():
    # no host can run either manner: a 400 that says why for each
    detail = refused(choose_manner, BOTH, [host("x", cim=False, vim=False)], None, SMALL)
    assert detail == ("no edge host can take the app in either manner: no host can take "
                      "CONTAINER (x: no CIM (container engine)); no host can take VM (x: no VIM)")
    assert "no hosts" in refused(choose_manner, BOTH, [], None, SMALL)
    # runnable but no room: a 409 CapacityExceeded
    with pytest.raises(CapacityExceeded) as e:
        choose_manner(BOTH, [host("b", cpu=0.1)], "vm", SMALL)
    assert e.value.status == 409 and "b: vCPU 0.5 > 0.1 free" in e.value.detail
    assert "prefer: " in refused(choose_manner, BOTH, [host("b")], "kvm", SMALL)
    assert "no software image" in refused(choose_manner, [], [host("b")])


def test_policy_single_manner_and_no_needs():
    assert choose_manner(["VM"], [], None) == (VM, "the app has only a VM image")
    # without needs a manner only has to be runnable
    assert choose_manner(BOTH, [host("b", cpu=0, mem=0, disk=0)], "vm")[0] is VM


HOST_KINDS = [dict(cim=c, vim=v, accel=a) for c in (True, False) for v in (True, False)
              for a in ("kvm", "tcg", "")]
ROOMS = [dict(cpu=8.0, mem=8192, disk=50.0), dict(cpu=0.7, mem=8192, disk=50.0),
         dict(cpu=8.0, mem=100, disk=50.0), dict(cpu=0.2, mem=8192, disk=50.0)]


def _cases():
    one = [host("h1", **k, **r) for k in HOST_KINDS for r in ROOMS]
    pairs = [[x, host("h2", **k, **r)] for x in one[::5] for k in HOST_KINDS[::2]
             for r in ROOMS[::2]]
    for hosts in [[h] for h in one] + pairs:
        for pref in (None, "container", "vm"):
            for accel in (False, True):
                yield hosts, pref, accel


def test_policy_invariants_over_every_mix():
    """Over every host kind x room x preference x acceleration: the chosen
    manner fits on some host; if both fit the preference (else CONTAINER)
    wins; if none fits the refusal is 409 when some host could run one,
    else 400; the reason names every host."""
    n = 0
    for hosts, pref, accel in _cases():
        n += 1
        fits = {m: [h.host_id for h in hosts
                    if decision.can_run(h, m, accel and m is VM) is None
                    and decision.room_for(h, SMALL[m]) is None] for m in (CONTAINER, VM)}
        runnable = any(decision.can_run(h, m, accel and m is VM) is None
                       for h in hosts for m in (CONTAINER, VM))
        try:
            manner, reason = choose_manner(BOTH, hosts, pref, SMALL, accel)
        except CapacityExceeded:
            assert not fits[CONTAINER] and not fits[VM] and runnable
            continue
        except InvalidInput:
            assert not fits[CONTAINER] and not fits[VM] and not runnable
            continue
        assert fits[manner], (hosts, pref, accel, manner)
        if fits[CONTAINER] and fits[VM]:
            assert manner is (deployment_type(pref) if pref else CONTAINER)
        for h in hosts:
            assert h.host_id in reason
    assert n > 500


def test_preference_from_config():
    orch = {"prefer": "vm", "prefer_by_app": {"app1": "container"}}
    assert preference_for(orch, "app1") == (CONTAINER, "orchestrator.prefer_by_app[app1]")
    assert preference_for(orch, "app2") == (VM, "orchestrator.prefer")
    assert preference_for({}, "app2") == (None, "")
    assert "orchestrator.prefer: 'fast'" in refused(preference_for, {"prefer": "fast"}, "a")


def test_the_config_takes_the_preference_and_refuses_typos(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("orchestrator: {prefer: vm, prefer_by_app: {sample-dual: container}}\n")
    cfg = config.load(f)
    assert cfg["orchestrator"]["prefer"] == "vm"
    for bad in ("orchestrator: {prefer: kvm}", "orchestrator: {prefer_by_app: {a: fast}}",
                "orchestrator: {prefr: vm}"):
        f.write_text(bad + "\n")
        with pytest.raises(InvalidInput):
            config.load(f)


# ---------------------------------------------------------------- through the API (fakes)
class AccelFake(FakeCompute):
    """A fake VIM reporting its acceleration, as the libvirt VIM does."""

    def __init__(self, accel: str, **kw):
        super().__init__(VM, **kw)
        self.accel = accel

    def capabilities(self):
        return dataclasses_replace(super().capabilities(), hardware_accel=self.accel)


def dataclasses_replace(obj, **kw):
    import dataclasses
    return dataclasses.replace(obj, **kw)


def dual_package(tmp: Path, **appd_changes) -> Path:
    appd = yaml.safe_load(DUAL_APPD.read_text())
    appd.update(appd_changes)
    src = Path(tempfile.mkdtemp(dir=tmp, prefix="src-dual-"))
    (src / "Artifacts").mkdir(parents=True)
    (src / "Artifacts/sample-http.tar").write_bytes(_fake_docker_tar())
    (src / "Artifacts/sample-vm.qcow2").write_bytes(QCOW2)
    (src / "Definitions").mkdir()
    (src / "Definitions/appd.yaml").write_text(yaml.safe_dump(appd))
    return build_package(src, src.with_suffix(".zip"))


@pytest.fixture
def lab(tmp_path):
    """The real core and REST API with two hosts: edge-a has only a CIM,
    edge-b a CIM and a VIM (TCG); fake drivers."""
    cfg = config.load()
    cfg["state_dir"] = str(tmp_path / "state")
    # each MEP with a service range: the sample asks its host for an address
    mep = {"driver": "fake", "service_cidr": "10.90.0.0/24"}
    cfg["hosts"] = [{"id": "edge-a", "cim": {"driver": "fake", "registry": "127.0.0.1:5000"}, "mep": mep},
                    {"id": "edge-b", "cim": {"driver": "fake", "registry": "127.0.0.1:5000"}, "vim": {"driver": "fake"},
                     "mep": mep}]
    orch = Orchestrator(cfg)
    fakes = {"a-cim": FakeCompute(CONTAINER), "b-cim": FakeCompute(CONTAINER),
             "b-vim": AccelFake("tcg")}
    orch.inventory.get("edge-a").attach("cim", fakes["a-cim"])
    orch.inventory.get("edge-b").attach("cim", fakes["b-cim"])
    orch.inventory.get("edge-b").attach("vim", fakes["b-vim"])
    for h in ("edge-a", "edge-b"):
        orch.inventory.get(h).attach("mep", FakeMep())
    server = make_server(orch, "127.0.0.1:0")
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()

    class Lab:
        pass
    e = Lab()
    e.orch, e.fakes, e.tmp, e.cfg = orch, fakes, tmp_path, cfg
    e.c = Client(f"http://127.0.0.1:{server.server_address[1]}", token="")
    yield e
    server.shutdown()
    server.server_close()
    orch.close()


def _onboard(e, zpath: Path, **extra) -> dict:
    return e.c.post(PKGS, {"appPkgName": "dual", "appPkgVersion": "1",
                           "appPkgPath": str(zpath), **extra,
                           "checksum": {"algorithm": "SHA-256",
                                        "hash": hashlib.sha256(zpath.read_bytes()).hexdigest()}}
                    )[0]


def _problem(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*args, **kw)
    return e.value


def _deploy(e, body: dict, keep: bool = False) -> tuple[dict, dict]:
    """Deploy an instance of sample-dual; unless `keep`, terminate it again
    (its traffic rule's address is then free for the next one)."""
    inst = e.c.post(INST, {"appDId": "sample-dual"})[0]
    op = e.c.wait_op(e.c.post(f"{INST}/{inst['id']}/instantiate", body)[0], timeout=20)
    info = e.c.get(f"{INST}/{inst['id']}")
    if not keep and info["instantiationState"] == "INSTANTIATED":
        end = e.c.post(f"{INST}/{inst['id']}/terminate", {"terminationType": "FORCEFUL"})[0]
        assert e.c.wait_op(end, timeout=20)["operationState"] == "COMPLETED"
    return info, op


def test_dual_onboarding_stores_both_images_and_records_both_manners(lab):
    pkg = _onboard(lab, dual_package(lab.tmp))
    assert pkg["deploymentTypes"] == ["CONTAINER", "VM"] and "deploymentType" not in pkg
    assert [i["containerFormat"] for i in pkg["softwareImages"]] == ["DOCKER", "BARE"]
    ref = pkg["softwareImages"][0]["imagePath"]
    assert set(lab.fakes["a-cim"].images) == {ref} == set(lab.fakes["b-cim"].images)
    assert set(lab.fakes["b-vim"].images) == {pkg["softwareImages"][1]["imagePath"]}
    # the package DELETE checks a named manner against both
    bad = _problem(lab.c.call, "DELETE", f"{PKGS}/{pkg['id']}?deploymentType=kvm")
    assert bad.status == 400 and ACCEPTED_FORMS in bad.detail
    bad = _problem(lab.c.call, "DELETE", f"{PKGS}/{pkg['id']}?deploymentTyp=VM")
    assert bad.status == 400 and "deploymentTyp" in bad.detail
    lab.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    assert lab.c.call("DELETE", f"{PKGS}/{pkg['id']}?deployMethod=0")[0] == 204
    assert lab.fakes["b-vim"].images == {} and lab.fakes["a-cim"].images == {}


@pytest.mark.parametrize("value, manner", [("container", CONTAINER), (0, VM), ("VM", VM)])
def test_onboarding_for_one_manner(lab, value, manner):
    pkg = _onboard(lab, dual_package(lab.tmp), deploymentType=value)
    assert pkg["deploymentType"] == manner.value and pkg["deploymentTypes"] == [manner.value]
    assert bool(lab.fakes["b-vim"].images) is (manner is VM)
    assert bool(lab.fakes["a-cim"].images) is (manner is CONTAINER)
    # instances of it then follow that manner, and the other is refused
    other = "CONTAINER" if manner is VM else "VM"
    inst = lab.c.post(INST, {"appDId": "sample-dual"})[0]
    err = _problem(lab.c.post, f"{INST}/{inst['id']}/instantiate", {"deploymentType": other})
    assert err.status == 400 and f"onboarded as {manner.value}" in err.detail
    # the delete request naming the other manner is refused
    lab.c.call("PATCH", f"{PKGS}/{pkg['id']}", {"operationState": "DISABLED"})
    err = _problem(lab.c.call, "DELETE", f"{PKGS}/{pkg['id']}?deploymentType={other}")
    assert err.status == 400 and f"onboarded as {manner.value}" in err.detail


def test_onboarding_type_is_checked_against_the_images(lab, tmp_path):
    from test_core_orchestration import CONTAINER_APPD, make_package
    zpath = make_package(tmp_path, CONTAINER_APPD, _fake_docker_tar())
    err = _problem(_onboard, lab, zpath, deployMethod="vm")
    assert err.status == 400
    assert err.detail == ("deployMethod says VM but the package holds only a CONTAINER image "
                          "(DOCKER/RAW)")
    err = _problem(_onboard, lab, zpath, deploymentType="VM", deployMethod="1")
    assert "deploymentType says VM but deployMethod says CONTAINER" in err.detail
    err = _problem(_onboard, lab, zpath, deploymentType="vmm")
    assert err.detail.startswith("deploymentType: 'vmm' is not a deployment type")
    assert lab.c.get(PKGS) == [] and lab.fakes["a-cim"].images == {}      # nothing kept


def test_policy_picks_by_host_and_records_the_reason(lab):
    _onboard(lab, dual_package(lab.tmp))
    # the same body, no manner: edge-a has no VIM -> container
    info, op = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-a"}}]})
    assert op["operationState"] == "COMPLETED", op
    assert (info["deploymentType"], info["hostId"]) == ("CONTAINER", "edge-a")
    assert "no host can take VM (edge-a: no VIM)" in info["decisionReason"]
    assert op["decisionReason"] == info["decisionReason"]
    assert lab.orch.store.get("op_occs", op["id"])["_plan"]["decidedBy"] == "policy"
    # edge-b can take both: no preference -> the smaller footprint
    info, op = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert (info["deploymentType"], info["hostId"]) == ("CONTAINER", "edge-b")
    assert "no preference configured" in info["decisionReason"]
    # with prefer: vm the same body on edge-b gets a VM
    lab.orch.lcm._orchestrator_cfg["prefer"] = "vm"
    info, op = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert (info["deploymentType"], info["hostId"]) == ("VM", "edge-b")
    assert "orchestrator.prefer prefers vm" in info["decisionReason"]
    # with no host named, a VM can only go to edge-b
    info, op = _deploy(lab, {})
    assert (info["deploymentType"], info["hostId"]) == ("VM", "edge-b")
    # a per-app preference wins
    lab.orch.lcm._orchestrator_cfg["prefer_by_app"] = {"sample-dual": "container"}
    info, op = _deploy(lab, {})
    assert info["deploymentType"] == "CONTAINER"
    assert "orchestrator.prefer_by_app[sample-dual] prefers container" in info["decisionReason"]


def test_accel_asked_tcg_vim_means_a_container(lab):
    appd = yaml.safe_load(DUAL_APPD.read_text())
    vcd = dict(appd["virtualComputeDescriptor"], requestAdditionalCapabilities=[
        {"requestedAdditionalCapabilityName": "hardwareAcceleration", "supportMandatory": True}])
    appd["swImageDescriptor"][1]["virtualComputeDescriptor"] = vcd
    _onboard(lab, dual_package(lab.tmp, swImageDescriptor=appd["swImageDescriptor"]))
    lab.orch.lcm._orchestrator_cfg["prefer"] = "vm"
    info, _ = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert info["deploymentType"] == "CONTAINER"
    assert "edge-b: its VIM is TCG-only and the AppD asks for hardware acceleration" \
        in info["decisionReason"]
    lab.fakes["b-vim"].accel = "kvm"
    info, _ = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}]})
    assert info["deploymentType"] == "VM"


@pytest.mark.parametrize("value, manner", [(0, "VM"), ("1", "CONTAINER"), ("vm", "VM")])
def test_named_manner_and_terminate_check(lab, value, manner):
    _onboard(lab, dual_package(lab.tmp))
    info, op = _deploy(lab, {"selectedMECHostInfo": [{"hostId": {"id": "edge-b"}}],
                             "deployMethod": value}, keep=True)
    assert info["deploymentType"] == manner and info["decisionReason"].startswith(
        f"deployMethod says {manner} (the app is dual-format")
    other = "CONTAINER" if manner == "VM" else "VM"
    err = _problem(lab.c.post, f"{INST}/{info['id']}/terminate",
                   {"terminationType": "FORCEFUL", "deploymentType": other})
    assert err.status == 400 and err.detail == (
        f"deploymentType says {other} but app instance {info['id']} was deployed as {manner}")
    err = _problem(lab.c.post, f"{INST}/{info['id']}/terminate",
                   {"terminationType": "FORCEFUL", "deploymentType": "pod"})
    assert err.status == 400 and ACCEPTED_FORMS in err.detail
    op = lab.c.wait_op(lab.c.post(f"{INST}/{info['id']}/terminate",
                                  {"terminationType": "FORCEFUL", "deployMethod": value})[0],
                       timeout=20)
    assert op["operationState"] == "COMPLETED"
    gone = lab.c.get(f"{INST}/{info['id']}")
    assert "decisionReason" not in gone and "deploymentType" not in gone


def test_dual_package_opens_with_both_images(tmp_path):
    pkg = open_package(dual_package(tmp_path))
    assert [(i.manner, i.path) for i in pkg.images] == [
        (CONTAINER, "Artifacts/sample-http.tar"), (VM, "Artifacts/sample-vm.qcow2")]
    assert pkg.image is pkg.images[0] and pkg.manner is CONTAINER


@pytest.mark.parametrize("change, says", [
    (lambda sw: sw.append(dict(sw[0], id="third")), "one or two images"),
    (lambda sw: sw.__setitem__(1, dict(sw[0], id="again")), "a second CONTAINER image"),
    (lambda sw: sw[1].__setitem__("id", sw[0]["id"]), "distinct ids"),
    (lambda sw: sw[1].__setitem__("virtualComputeDescriptor", {"virtualCpu": 1}),
     "swImageDescriptor[1]: virtualComputeDescriptor"),
    (lambda sw: sw[1].__setitem__("containerFormat", "OVA"), "swImageDescriptor[1]"),
    (lambda sw: sw.clear(), "missing: swImageDescriptor"),
])
def test_bad_dual_appds_are_refused_naming_the_image(tmp_path, change, says):
    appd = yaml.safe_load(DUAL_APPD.read_text())
    change(appd["swImageDescriptor"])
    with pytest.raises(InvalidInput) as e:
        dual_package(tmp_path, swImageDescriptor=appd["swImageDescriptor"])
    assert says in e.value.detail


def test_the_container_tosca_example():
    text = (REPO / "examples/orchestration/container-tosca.yaml").read_text()
    d = decide_manner({"orchestrationInfo": text}, BOTH)
    assert (d.manner, d.source) == (CONTAINER, "orchestrationType")
    appd = yaml.safe_load(DUAL_APPD.read_text())
    r = resource_request("i1", appd, CONTAINER, "127.0.0.1:5000/a/b:1", {"orchestrationInfo": text})
    assert (r.vcpu, r.memory_mb) == (1.0, 128)
    # the VM-only sample app refuses it, naming both signals
    assert "orchestrationInfo's orchestration type says CONTAINER but the app was onboarded " \
           "as VM" in refused(decide_manner, {"orchestrationInfo": text}, "VM")
