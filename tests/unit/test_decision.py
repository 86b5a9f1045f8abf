"""The deployment decision and the reduction to one ResourceRequest.

Pure code (no backend): every test feeds real documents (the examples on
disk, YAML strings, JSON objects) through the public functions.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from mecorch.spec.decision import Decision, decide_manner, deployment_type, resource_request
from mecorch.kernel.errors import InvalidInput
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec
from mecorch.spec.orchestration_info import (
    k8s_bytes, k8s_cpu, orchestration_kind, tosca_bytes, bytes_to_mb, parse)
from mecorch.kernel.states import DeploymentType

VM, CONTAINER = DeploymentType.VM, DeploymentType.CONTAINER
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orchestration"
VM_TOSCA = (EXAMPLES / "vm-tosca.yaml").read_text()
POD_YAML = (EXAMPLES / "container-pod.yaml").read_text()
REF = "127.0.0.1:5000/mecorch/sample-http:1.0"

SOL001 = """
tosca_definitions_version: tosca_simple_yaml_1_3
topology_template:
  node_templates:
    VDU1:
      type: tosca.nodes.nfv.Vdu.Compute
      properties:
        name: vdu1
        sw_image_data:
          name: sample-vm
          version: "1.0"
          min_disk: 1 GB
      capabilities:
        virtual_compute:
          properties:
            virtual_cpu:
              num_virtual_cpu: 2
            virtual_memory:
              virtual_mem_size: 512 MB
            virtual_local_storage:
              - size_of_storage: 3 GB
      requirements:
        - virtual_storage: VirtualStorage
    VirtualStorage:
      type: tosca.nodes.nfv.Vdu.VirtualBlockStorage
      properties:
        virtual_block_storage_data:
          size_of_storage: 2 GiB
    CP1:
      type: tosca.nodes.nfv.VduCp
      properties:
        layer_protocols: [ipv4]
"""


def pod(**container) -> dict:
    c = {"name": "app", "image": REF}
    c.update(container)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": [c]}}


def deployment(**container) -> dict:
    p = pod(**container)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}}, "spec": p["spec"]}}}


def tosca(nodes: dict) -> dict:
    return {"tosca_definitions_version": "tosca_simple_yaml_1_3",
            "topology_template": {"node_templates": nodes}}


def appd(**extra) -> dict:
    d = {"appDId": "app1",
         "virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 1},
                                      "virtualMemory": {"virtualMemSize": 256}},
         "swImageDescriptor": {"id": "img1", "name": "mecorch/sample-http", "version": "1.0",
                               "minDisk": 1, "minRam": 32,
                               "swImage": "Artifacts/sample-http.tar"}}
    d.update(extra)
    return d


def rr_container(request: dict, **appd_extra) -> ResourceRequest:
    return resource_request("inst1", appd(**appd_extra), CONTAINER, REF, request)


def rr_vm(request: dict, **appd_extra) -> ResourceRequest:
    a = appd(**appd_extra)
    a["swImageDescriptor"] = {"id": "sample-vm-image", "name": "sample-vm", "minDisk": 1,
                              "swImage": "Artifacts/sample-vm.qcow2"}
    return resource_request("inst1", a, VM, "sample-vm", request)


def refused(fn, *args, **kw) -> str:
    with pytest.raises(InvalidInput) as e:
        fn(*args, **kw)
    assert e.value.status == 400
    return e.value.detail


# -- the three ways of deciding -----------------------------------------------

def test_explicit_deployment_type_decides():
    for value in ("VM", "CONTAINER"):
        d = decide_manner({"deploymentType": value}, None)
        assert d == Decision(DeploymentType(value), "deploymentType",
                             {"deploymentType": DeploymentType(value)})


def test_orchestration_info_decides_by_its_kind():
    assert decide_manner({"orchestrationInfo": VM_TOSCA}, None).manner == VM
    d = decide_manner({"orchestrationInfo": POD_YAML}, None)
    assert (d.manner, d.source, d.signals) == (CONTAINER, "orchestrationInfo",
                                               {"orchestrationInfo": CONTAINER})
    assert decide_manner({"orchestrationInfo": deployment()}, None).manner == CONTAINER
    assert decide_manner({"orchestrationInfo": yaml.safe_load(SOL001)}, None).manner == VM


def test_recorded_manner_decides_last():
    for m in (VM, CONTAINER):
        d = decide_manner({"selectedMECHostInfo": [{"hostId": "default"}]}, m)
        assert (d.manner, d.source, d.signals) == (m, "onboarding", {"onboarding": m})
    assert decide_manner({}, "VM").manner == VM          # the stored string works too


def test_agreeing_signals_report_all_and_the_first_decides():
    d = decide_manner({"deploymentType": "VM", "orchestrationInfo": VM_TOSCA}, VM)
    assert d.source == "deploymentType"
    assert d.signals == {"deploymentType": VM, "orchestrationInfo": VM, "onboarding": VM}
    d = decide_manner({"orchestrationInfo": POD_YAML}, CONTAINER)
    assert d.source == "orchestrationInfo" and set(d.signals) == {"orchestrationInfo", "onboarding"}


def test_null_fields_count_as_absent():
    d = decide_manner({"deploymentType": None, "orchestrationInfo": None}, CONTAINER)
    assert d.source == "onboarding"


# -- contradictions name the signals that disagree ------------------------------

@pytest.mark.parametrize("request_, recorded, expected", [
    ({"deploymentType": "VM", "orchestrationInfo": POD_YAML}, None,
     "deploymentType says VM but orchestrationInfo is a Kubernetes Pod (CONTAINER)"),
    ({"deploymentType": "CONTAINER", "orchestrationInfo": VM_TOSCA}, None,
     "deploymentType says CONTAINER but orchestrationInfo is a TOSCA service template (VM)"),
    ({"deploymentType": "CONTAINER", "orchestrationInfo": deployment()}, VM,
     "deploymentType says CONTAINER and orchestrationInfo is a Kubernetes Deployment "
     "(CONTAINER) but the app was onboarded as VM (its package holds a VM image)"),
    ({"deploymentType": "VM"}, CONTAINER,
     "deploymentType says VM but the app was onboarded as CONTAINER "
     "(its package holds a container image)"),
    ({"orchestrationInfo": VM_TOSCA}, CONTAINER,
     "orchestrationInfo is a TOSCA service template (VM) but the app was onboarded as "
     "CONTAINER"),
    ({"orchestrationInfo": POD_YAML}, VM,
     "orchestrationInfo is a Kubernetes Pod (CONTAINER) but the app was onboarded as VM"),
    ({"deploymentType": "VM", "orchestrationInfo": POD_YAML}, CONTAINER,
     "deploymentType says VM but orchestrationInfo is a Kubernetes Pod (CONTAINER) and "
     "the app was onboarded as CONTAINER"),
])
def test_contradicting_signals_are_a_400_naming_them(request_, recorded, expected):
    detail = refused(decide_manner, request_, recorded)
    assert detail.startswith("contradicting deployment signals: ")
    assert expected in detail


@pytest.mark.parametrize("value", ["", " VM", "VM\n", "--VM", "KUBERNETES", 2, -1, "01",
                                   1.0, 0.5, True, False, ["VM"], {"VM": 1}, "x" * 10000])
def test_invalid_deployment_type(value):
    detail = refused(decide_manner, {"deploymentType": value}, None)
    assert detail.startswith("deploymentType: ")
    assert detail.endswith('accepted: "VM" or "CONTAINER" (any case), or 0 (VM) or 1 '
                           '(CONTAINER) as a number or a string')
    assert len(detail) < 200                        # a huge value is not echoed whole
    refused(deployment_type, value)


def test_no_signal_at_all():
    assert "no deployment signal" in refused(decide_manner, {}, None)
    refused(decide_manner, "not a dict", VM)
    refused(decide_manner, None, VM)


# -- content-based detection ----------------------------------------------------

def test_detection_reads_content_never_names(tmp_path):
    # A TOSCA document saved as pod.yaml is TOSCA; a Pod saved as tosca.yaml is a Pod.
    (tmp_path / "pod.yaml").write_text(VM_TOSCA)
    (tmp_path / "service-template.tosca.yaml").write_text(POD_YAML)
    assert orchestration_kind((tmp_path / "pod.yaml").read_text()) == VM
    assert orchestration_kind((tmp_path / "service-template.tosca.yaml").read_text()) == CONTAINER


def test_string_and_object_forms_are_equivalent():
    for text in (VM_TOSCA, POD_YAML, SOL001):
        obj = yaml.safe_load(text)
        assert orchestration_kind(text) == orchestration_kind(obj)
        assert orchestration_kind(json.dumps(obj)) == orchestration_kind(obj)   # JSON text is YAML
    req_s = rr_container({"orchestrationInfo": POD_YAML})
    req_o = rr_container({"orchestrationInfo": yaml.safe_load(POD_YAML)})
    assert req_s == req_o


@pytest.mark.parametrize("doc, kind", [
    ({"tosca_definitions_version": "tosca_simple_yaml_1_3"}, VM),
    ({"topology_template": {"node_templates": {"a": {"type": "Application"}}}}, VM),
    ({"node_templates": {"a": {"type": "my.Custom"}}}, VM),         # a fragment
    (pod(), CONTAINER),
    (deployment(), CONTAINER),
])
def test_kinds_recognised(doc, kind):
    assert orchestration_kind(doc) == kind


@pytest.mark.parametrize("doc, says", [
    ({"apiVersion": "v1", "kind": "Service", "spec": {"ports": []}}, "'Service' manifest"),
    ({"apiVersion": "v1", "kind": "Pod", "spec": {}}, "'Pod' without spec containers"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"containers": []}},
     "'Deployment' without spec containers"),
    ({"kind": "Pod", "spec": {"containers": []}}, "recognised neither"),
    ({"image": REF, "cpu": 1}, "top-level keys: 'image', 'cpu'"),
    ({"node_templates": {"a": {"properties": {}}}}, "recognised neither"),
    ({"node_templates": {}}, "recognised neither"),
    (dict(pod(), tosca_definitions_version="tosca_simple_yaml_1_3"), "ambiguous"),
    ([pod()], "must be a YAML string or a JSON object"),
    ("- a\n- b\n", "must be a mapping"),
    ("just text", "must be a mapping"),
    ("", "must be a mapping"),
    (42, "must be a YAML string or a JSON object"),
    (b"apiVersion: v1", "must be a YAML string or a JSON object"),
])
def test_anything_else_is_refused_saying_what_was_recognised(doc, says):
    detail = refused(orchestration_kind, doc)
    assert says in detail
    refused(decide_manner, {"orchestrationInfo": doc}, CONTAINER)


@pytest.mark.parametrize("text, says", [
    ("!!python/object/apply:os.system ['touch /tmp/pwned']", "not valid YAML"),
    ("apiVersion: !!python/name:os.system v1\nkind: Pod\n", "not valid YAML"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")), "aliases"),
    ("[" * 50000, "nested too deeply"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("kind: Pod\n  bad: indent\n", "not valid YAML"),
    ("x: " + "y" * (1 << 20), "larger than"),
])
def test_hostile_yaml_is_refused(text, says):
    assert says in refused(orchestration_kind, text)
    assert not Path("/tmp/pwned").exists()


# -- quantities ---------------------------------------------------------------

@pytest.mark.parametrize("value, cores", [
    ("500m", 0.5), ("1", 1.0), ("0.5", 0.5), ("10m", 0.01), ("64", 64.0), (2, 2.0),
    (0.25, 0.25), ("1.5", 1.5), ("0100m", 0.1)])
def test_k8s_cpu(value, cores):
    assert k8s_cpu(value, "cpu") == cores


@pytest.mark.parametrize("value", [
    "5m", "0", "65", "-1", "1.5.5", "1e3", "", " 1", "1 ", "1\n", "0x10", "1m1", "1M",
    "\u0661", "+1", ".5", True, False, None, [1], float("nan"), float("inf"), -0.5,
    10 ** 100, "9" * 16, "--cpus=64"])
def test_k8s_cpu_refused(value):
    refused(k8s_cpu, value, "cpu")


@pytest.mark.parametrize("value, mib", [
    ("64Mi", 64), ("1Gi", 1024), ("128M", 123), ("1.5Gi", 1536), (67108864, 64),
    ("4Mi", 4), ("256Gi", 262144), ("65536Ki", 64), ("1G", 954), ("4194305", 5)])
def test_k8s_memory(value, mib):
    w = "memory"
    assert bytes_to_mb(k8s_bytes(value, w), w) == mib


@pytest.mark.parametrize("value, says", [
    ("128m", "did you mean 128Mi or 128M"), ("64mi", "not a byte quantity"),
    ("3Mi", "from 4 to"), ("257Gi", "at most"), ("999999999999999Pi", "at most"),
    ("9" * 16, "not a byte quantity"), ("-64Mi", "not a byte quantity"),
    ("64 Mi", "not a byte quantity"), ("64Mi\n", "not a byte quantity"),
    (True, "not true/false"), (-1, "negative"), (float("inf"), "finite"),
    ("1e9", "not a byte quantity"), ("--memory=1g", "not a byte quantity")])
def test_k8s_memory_refused(value, says):
    detail = refused(lambda: bytes_to_mb(k8s_bytes(value, "memory"), "memory"))
    assert says in detail


@pytest.mark.parametrize("value, mib", [
    ("256 MB", 256), ("1 GiB", 1024), ("256MB", 256), ("256 mb", 256), ("0.5 GB", 512),
    ("1 gib", 1024), ("262144 KiB", 256), ("268435456 B", 256)])
def test_tosca_sizes_binary_as_etsi_reads_them(value, mib):
    assert bytes_to_mb(tosca_bytes(value, "m"), "m") == mib


@pytest.mark.parametrize("value", [
    "256", 256, 256.0, "256  MB", "256 XB", "-1 MB", "256 MB\n", " 256 MB", "MB",
    "256 M B", "1e3 MB", True, None, "\u0662\u0665\u0666 MB"])
def test_tosca_sizes_refused(value):
    refused(tosca_bytes, value, "size")


# -- limits and hostile values through the whole path ---------------------------

@pytest.mark.parametrize("container, says", [
    ({"resources": {"limits": {"cpu": "65"}}}, "cpu: must be a number from 0.01 to 64"),
    ({"resources": {"limits": {"cpu": "1m"}}}, "cpu: must be a number"),
    ({"resources": {"limits": {"memory": "2Mi"}}}, "memory: must be a number from 4"),
    ({"resources": {"limits": {"memory": "300Gi"}}}, "at most 262144 MiB"),
    ({"resources": {"limits": {"ephemeral-storage": "3Ti"}}}, "at most 2048 GiB"),
    ({"resources": {"limits": {"cpu": True}}}, "not true/false"),
    ({"resources": "lots"}, "resources: must be a mapping"),
    ({"ports": [{"containerPort": 0}]}, "containerPort: must be an integer port"),
    ({"ports": [{"containerPort": 70000}]}, "containerPort"),
    ({"ports": [{"containerPort": "80"}]}, "containerPort"),
    ({"ports": [{"containerPort": True}]}, "containerPort"),
    ({"ports": [{"containerPort": 80, "protocol": "tcp"}]}, "protocol: must be TCP, UDP or SCTP"),
    ({"ports": [{"containerPort": 80}, {"containerPort": 80}]}, "80/TCP is given twice"),
    ({"ports": [{"containerPort": 80, "hostPort": 8080},
                {"containerPort": 81, "hostPort": 8080}]}, "published twice"),
    ({"ports": [{"containerPort": 80, "hostIP": "127.0.0.1"}]}, "hostIP: needs a hostPort"),
    ({"ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "--net=host"}]},
     "hostIP: must be an IP address"),
    ({"ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "fe80::1%eth0\n-x"}]},
     "hostIP: must be an IP address"),
    ({"ports": [{"containerPort": p} for p in range(1, 70)]}, "at most 64"),
    ({"env": [{"name": "-e", "value": "x"}]}, "variable name '-e' is not valid"),
    ({"env": [{"name": "A B", "value": "x"}]}, "is not valid"),
    ({"env": [{"name": "A", "value": 8080}]}, "must be a string"),
    ({"env": [{"name": "A", "value": "x\x00y"}]}, "without NUL"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {}}}]}, "valueFrom: is not supported"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "given twice"),
    ({"env": {"A": "1"}}, "env: must be a list"),
    ({"command": ["sh", "-c", "echo a\nrm -rf /"]}, "control characters"),
    ({"args": "--port 80"}, "args: must be a list"),
    ({"args": ["x"] * 300}, "at most 256"),
    ({"command": [1]}, "command[0]: must be a string"),
    ({"image": "--privileged"}, "names image '--privileged'"),
    ({"image": "127.0.0.1:5000/mecorch/sample-http"}, "names image"),
    ({"image": "evil.example/mecorch/sample-http:1.0"}, "names image"),
    ({"image": REF + "\n"}, "control characters"),
])
def test_hostile_or_out_of_range_container_values(container, says):
    assert says in refused(rr_container, {"orchestrationInfo": pod(**container)})


def test_image_mismatch_names_both_images():
    detail = refused(rr_container, {"orchestrationInfo": pod(image="docker.io/library/nginx:1")})
    assert ("orchestrationInfo.spec.containers[0].image names image "
            "'docker.io/library/nginx:1'") in detail
    assert REF in detail and "comes from the onboarded package" in detail


def test_images_the_package_names_are_accepted():
    for name in (REF, "mecorch/sample-http", "mecorch/sample-http:1.0",
                 "Artifacts/sample-http.tar"):
        assert rr_container({"orchestrationInfo": pod(image=name)}).image == REF
    # The image that runs is always the package's, whatever alias was named.
    assert rr_container({"orchestrationInfo": pod(image="img1")}).image == REF


@pytest.mark.parametrize("name", ["-rf", "a/b", "..", "a..b", "x" * 65, "", " data", "data\n",
                                  "$(id)", 5, None])
def test_hostile_volume_names(name):
    spec = {"volumes": [{"name": name, "emptyDir": {}}]}
    doc = pod()
    doc["spec"].update(spec)
    refused(rr_container, {"orchestrationInfo": doc})
    refused(rr_container, {"virtualStorageDescriptor": [{"id": name, "sizeOfStorage": 1}]})
    refused(rr_vm, {"orchestrationInfo": tosca({
        "v": {"type": "LocalVolume", "properties": {"name": name, "size": "1 GB"}}})})


def test_volume_count_limit_covers_all_sources_together():
    appd_vols = [{"id": f"a{i}", "sizeOfStorage": 1} for i in range(10)]
    req_vols = [{"id": f"r{i}", "sizeOfStorage": 1} for i in range(7)]
    detail = refused(rr_container, {"virtualStorageDescriptor": req_vols},
                     virtualStorageDescriptor=appd_vols)
    assert "at most 16" in detail and "17" in detail
    refused(rr_container, {"virtualStorageDescriptor": appd_vols + req_vols})
    ok = rr_container({"virtualStorageDescriptor": req_vols[:6]}, virtualStorageDescriptor=appd_vols)
    assert len(ok.volumes) == 16


@pytest.mark.parametrize("request_, says", [
    ({"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 65}}}, "numVirtualCpu"),
    ({"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": -1}}}, "numVirtualCpu"),
    ({"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": True}}}, "numVirtualCpu"),
    ({"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": "2"}}}, "numVirtualCpu"),
    ({"virtualComputeDescriptor": {"virtualMemory": {"virtualMemSize": 1e300}}}, "virtualMemSize"),
    ({"virtualComputeDescriptor": {"virtualMemory": {"virtualMemSize": float("nan")}}},
     "virtualMemSize"),
    ({"virtualComputeDescriptor": {"virtualMemory": {"virtualMemSize": 3}}}, "virtualMemSize"),
    ({"virtualComputeDescriptor": {"virtualCpu": 2}}, "virtualCpu: must be a mapping"),
    ({"virtualComputeDescriptor": ["x"]}, "must be a mapping"),
    ({"virtualComputeDescriptor": "!!python/object/apply:os.system [id]"}, "not valid YAML"),
    ({"virtualStorageDescriptor": [{"id": "d", "sizeOfStorage": 2049}]}, "sizeOfStorage"),
    ({"virtualStorageDescriptor": [{"id": "d", "sizeOfStorage": 0}]}, "sizeOfStorage"),
    ({"virtualStorageDescriptor": [{"id": "d"}]}, "is required for a new volume"),
    ({"virtualStorageDescriptor": [{"id": "d", "sizeOfStorage": 1, "typeOfStorage": "OBJECT"}]},
     "typeOfStorage"),
    ({"virtualStorageDescriptor": [{"id": "d", "sizeOfStorage": 1, "deletionPolicy": "KEEP"}]},
     "deletionPolicy: must be RETAIN or DELETE"),
    ({"virtualStorageDescriptor": [{"id": "d", "sizeOfStorage": 1}] * 2}, "given twice"),
    ({"virtualStorageDescriptor": {"id": "d"}}, "must be a list"),
])
def test_hostile_request_descriptors(request_, says):
    assert says in refused(rr_container, request_)


def test_bad_arguments_are_refused():
    refused(resource_request, "-rf", appd(), CONTAINER, REF, {})
    refused(resource_request, "i1", appd(appDId="a b"), CONTAINER, REF, {})
    refused(resource_request, "i1", "appd", CONTAINER, REF, {})
    refused(resource_request, "i1", appd(), CONTAINER, "--privileged", {})
    refused(resource_request, "i1", appd(), VM, "--privileged", {})
    refused(resource_request, "i1", appd(), CONTAINER, REF, "not a dict")
    assert "manner: 'KUBERNETES' is not a deployment type" in refused(
        resource_request, "i1", appd(), "KUBERNETES", REF, {})
    assert "recorded manner: 'pod' is not" in refused(decide_manner, {}, "pod")


# -- merge order: AppD < request descriptors < orchestrationInfo ----------------

def test_appd_alone_gives_the_defaults():
    r = rr_container({}, virtualStorageDescriptor=[
        {"id": "data", "typeOfStorage": "BLOCK", "sizeOfStorage": 2},
        {"id": "keep", "sizeOfStorage": 1, "deletionPolicy": "RETAIN"}])
    assert r == ResourceRequest(
        instance_id="inst1", app_d_id="app1", manner=CONTAINER, image=REF, vcpu=1.0,
        memory_mb=256, disk_gb=1.0,
        volumes=(VolumeSpec("data", 2.0, None, False), VolumeSpec("keep", 1.0, None, True)))


def test_merge_order_appd_then_request_then_orchestration_info():
    vols = [{"id": "data", "sizeOfStorage": 1}]
    request = {"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 2},
                                            "virtualMemory": {"virtualMemSize": 512}},
               "virtualStorageDescriptor": [{"id": "data", "sizeOfStorage": 2},
                                            {"id": "logs", "sizeOfStorage": 1,
                                             "deletionPolicy": "RETAIN"}]}
    r = rr_container(request, virtualStorageDescriptor=vols)
    assert (r.vcpu, r.memory_mb) == (2.0, 512)
    assert r.volumes == (VolumeSpec("data", 2.0), VolumeSpec("logs", 1.0, reserved=True))

    doc = pod(resources={"limits": {"cpu": "1500m"}},            # memory not said
              volumeMounts=[{"name": "data", "mountPath": "/var/data/"}])
    doc["spec"]["volumes"] = [{"name": "data", "emptyDir": {"sizeLimit": "3Gi"}},
                              {"name": "tmp", "emptyDir": {}}]
    r = rr_container(dict(request, orchestrationInfo=doc), virtualStorageDescriptor=vols)
    assert (r.vcpu, r.memory_mb) == (1.5, 512)                 # memory kept from the request
    assert r.volumes == (VolumeSpec("data", 3.0, "/var/data"),
                         VolumeSpec("logs", 1.0, None, True),
                         VolumeSpec("tmp", 1.0))

    # The same order for a VM: TOSCA over the request over the AppD.
    r = rr_vm(dict(request, orchestrationInfo=SOL001))
    assert (r.vcpu, r.memory_mb, r.disk_gb) == (2.0, 512, 3.0)
    assert r.volumes == (VolumeSpec("data", 2.0), VolumeSpec("logs", 1.0, None, True),
                         VolumeSpec("VirtualStorage", 2.0))
    r = rr_vm(dict(request, orchestrationInfo=tosca({"app": {
        "type": "Application", "capabilities": {"host": {"properties": {"mem_size": "1 GB"}}}}})))
    assert (r.vcpu, r.memory_mb) == (2.0, 1024)


def test_request_descriptors_may_be_nfv_text():
    # The ETSI OpenAPI types the NFV descriptors as strings ("Ref NFV").
    r = rr_container({"virtualComputeDescriptor": json.dumps(
        {"virtualCpu": {"numVirtualCpu": 0.25}, "virtualMemory": {"virtualMemSize": 100}}),
        "virtualStorageDescriptor": ["id: d\nsizeOfStorage: 0.5\n"]})
    assert (r.vcpu, r.memory_mb, r.volumes) == (0.25, 100, (VolumeSpec("d", 0.5),))


def test_request_can_change_an_appd_volume_policy_but_not_drop_it():
    vols = [{"id": "data", "sizeOfStorage": 1, "deletionPolicy": "RETAIN"}]
    r = rr_container({"virtualStorageDescriptor": [{"id": "data", "deletionPolicy": "DELETE"}]},
                     virtualStorageDescriptor=vols)
    assert r.volumes == (VolumeSpec("data", 1.0, None, False),)
    r = rr_container({"virtualStorageDescriptor": []}, virtualStorageDescriptor=vols)
    assert r.volumes == (VolumeSpec("data", 1.0, None, True),)


def test_examples_reduce_to_the_documented_resources():
    r = resource_request("i1", appd(), CONTAINER, REF, {"orchestrationInfo": POD_YAML})
    assert (r.vcpu, r.memory_mb, r.ports) == (0.5, 64, (PortSpec(80, "tcp"),))
    vm_appd = yaml.safe_load((EXAMPLES.parent / "sample-vm-app/Definitions/appd.yaml").read_text())
    r = resource_request("i2", vm_appd, VM, "sample-vm", {"orchestrationInfo": VM_TOSCA})
    assert (r.vcpu, r.memory_mb, r.disk_gb) == (1.0, 256, 1.0)
    # The example's volume is the sample AppD's own: it is overridden, not doubled.
    assert r.volumes == (VolumeSpec("sample-vm-data", 1.0, None, False),)
    c_appd = yaml.safe_load(
        (EXAMPLES.parent / "sample-container-app/Definitions/appd.yaml").read_text())
    r = resource_request("i3", c_appd, CONTAINER, REF, {"orchestrationInfo": POD_YAML})
    assert (r.app_d_id, r.vcpu, r.memory_mb, r.disk_gb) == ("sample-http", 0.5, 64, 0.1)


def test_requests_stand_in_for_limits():
    r = rr_container({"orchestrationInfo": pod(resources={
        "requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"memory": "200Mi"}})})
    assert (r.vcpu, r.memory_mb) == (0.25, 200)


def test_minram_mindisk_and_whole_vm_vcpus():
    detail = refused(rr_container, {"orchestrationInfo": pod(resources={"limits": {"memory": "16Mi"}})})
    assert "memory: 16 MB (from orchestrationInfo) is below the image's minRam of 32 MB" in detail
    detail = refused(rr_container, {"orchestrationInfo": pod(
        resources={"limits": {"ephemeral-storage": "512Mi"}})})
    assert "below the image's minDisk of 1 GB" in detail
    detail = refused(rr_vm, {"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 1.5}}})
    assert "whole number of vCPUs, 1.5 comes from virtualComputeDescriptor" in detail
    assert rr_container({"virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 1.5}}}).vcpu == 1.5


def test_orchestration_info_must_be_of_the_decided_manner():
    assert "but the instance is deployed as VM" in refused(
        rr_vm, {"orchestrationInfo": POD_YAML})
    assert "but the instance is deployed as CONTAINER" in refused(
        rr_container, {"orchestrationInfo": VM_TOSCA})


# -- Kubernetes details ---------------------------------------------------------

def test_pod_ports_env_command_args():
    r = rr_container({"orchestrationInfo": pod(
        ports=[{"containerPort": 80, "hostPort": 8080},
               {"containerPort": 53, "protocol": "UDP", "hostPort": 5300, "hostIP": "127.0.0.2"},
               {"containerPort": 9000, "protocol": "SCTP"}],
        env=[{"name": "MODE", "value": "edge"}, {"name": "EMPTY"}],
        command=["/bin/httpd"], args=["-f", "--port", "80"])})
    assert r.ports == (PortSpec(80, "tcp", 8080, "127.0.0.1"), PortSpec(53, "udp", 5300, "127.0.0.2"),
                       PortSpec(9000, "sctp"))
    assert r.env == {"MODE": "edge", "EMPTY": ""}
    # Kubernetes command/args are Docker's Entrypoint/Cmd.
    assert r.command == ("-f", "--port", "80") and r.extra == {"entrypoint": ["/bin/httpd"]}
    r = rr_container({"orchestrationInfo": pod(args=["-v"])})
    assert r.command == ("-v",) and r.extra == {}


def test_deployment_is_read_like_its_pod_template():
    d = deployment(resources={"limits": {"cpu": "2", "memory": "1Gi"}},
                   volumeMounts=[{"name": "cache", "mountPath": "/cache"}])
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "cache", "emptyDir": {"sizeLimit": "500Mi"}}]
    d["spec"]["template"]["metadata"]["annotations"] = {"mecorch/retain-volumes": "cache"}
    r = rr_container({"orchestrationInfo": d})
    assert (r.vcpu, r.memory_mb) == (2.0, 1024)
    assert r.volumes == (VolumeSpec("cache", 500 / 1024, "/cache", True),)
    for replicas in (2, 0, True, "1"):
        d["spec"]["replicas"] = replicas
        assert "replicas: must be 1" in refused(rr_container, {"orchestrationInfo": d})


def test_retain_annotation_marks_pod_and_appd_volumes():
    doc = pod(volumeMounts=[{"name": "scratch", "mountPath": "/s"}])
    doc["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    doc["metadata"]["annotations"] = {"mecorch/retain-volumes": "scratch, data"}
    r = rr_container({"orchestrationInfo": doc},
                     virtualStorageDescriptor=[{"id": "data", "sizeOfStorage": 1}])
    assert {v.name: v.reserved for v in r.volumes} == {"data": True, "scratch": True}
    doc["metadata"]["annotations"] = {"mecorch/retain-volumes": "nosuch"}
    assert "names nosuch, which is not a volume" in refused(rr_container, {"orchestrationInfo": doc})
    doc["metadata"]["annotations"] = {"mecorch/retain-volumes": "a;rm -rf /"}
    refused(rr_container, {"orchestrationInfo": doc})


@pytest.mark.parametrize("volumes, mounts, says", [
    ([{"name": "h", "hostPath": {"path": "/"}}], [], "only emptyDir volumes"),
    ([{"name": "h", "emptyDir": {}, "hostPath": {"path": "/"}}], [], "found hostPath"),
    ([{"name": "s", "secret": {"secretName": "x"}}], [], "only emptyDir volumes"),
    ([{"name": "v", "emptyDir": {}}] * 2, [], "given twice"),
    ([{"name": "v", "emptyDir": {"sizeLimit": "1Ti"}}], [], None),          # 1 TiB is allowed
    ([{"name": "v", "emptyDir": {"sizeLimit": "3Ti"}}], [], "at most 2048 GiB"),
    ([{"name": "v", "emptyDir": {"sizeLimit": "0"}}], [], "sizeLimit"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "w", "mountPath": "/w"}], "not a volume of the pod"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "rel"}], "absolute path"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/"}], "must not be '/'"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a/../etc"}], "'..'"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a:/etc"}], "without ':'"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "-v"}], "absolute path"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a\n/b"}], "control"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a", "subPath": "x"}],
     "subPath: is not supported"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a", "readOnly": True}],
     "read-only"),
    ([{"name": "v", "emptyDir": {}}], [{"name": "v", "mountPath": "/a"},
                                       {"name": "v", "mountPath": "/b"}], "mounted twice"),
    ([{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}],
     [{"name": "v", "mountPath": "/a"}, {"name": "w", "mountPath": "/a/"}], "used twice"),
])
def test_pod_volumes(volumes, mounts, says):
    doc = pod(volumeMounts=mounts)
    doc["spec"]["volumes"] = volumes
    if says is None:
        assert rr_container({"orchestrationInfo": doc}).volumes[0].size_gb == 1024.0
    else:
        assert says in refused(rr_container, {"orchestrationInfo": doc})


def test_what_cannot_be_run_is_refused_not_dropped():
    two = pod()
    two["spec"]["containers"].append({"name": "sidecar", "image": REF})
    assert "exactly one container (found 2)" in refused(rr_container, {"orchestrationInfo": two})
    init = pod()
    init["spec"]["initContainers"] = [{"name": "i", "image": REF}]
    assert "initContainers" in refused(rr_container, {"orchestrationInfo": init})
    # Fields mecorch does not honour are refused by name, privilege asks
    # too (a securityContext may drop privileges: never pretended)...
    for field, value in (("securityContext", {"privileged": True}),
                         ("securityContext", {"readOnlyRootFilesystem": True}),
                         ("workingDir", "/srv"), ("imagePullPolicy", "Never"),
                         ("lifecycle", {"preStop": {"exec": {"command": ["x"]}}}),
                         ("tty", True)):
        says = refused(rr_container, {"orchestrationInfo": pod(**{field: value})})
        assert f"containers[0].{field}: is not supported" in says, (field, says)
    for field, value in (("hostNetwork", True), ("nodeSelector", {"zone": "a"}),
                         ("serviceAccountName", "robot"), ("tolerations", [{}])):
        doc = pod()
        doc["spec"][field] = value
        says = refused(rr_container, {"orchestrationInfo": doc})
        assert f"spec.{field}: is not supported" in says, (field, says)
    # ...unless at Kubernetes' own default, as `kubectl get -o yaml` spells them
    exported = pod(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log",
                   terminationMessagePolicy="File", securityContext={}, tty=False)
    exported["spec"].update(hostNetwork=False, dnsPolicy="ClusterFirst",
                            schedulerName="default-scheduler", enableServiceLinks=True,
                            terminationGracePeriodSeconds=30, securityContext={})
    assert rr_container({"orchestrationInfo": exported}) == rr_container({})


# -- TOSCA details ----------------------------------------------------------------

def test_sol001_vdu_shape():
    r = rr_vm({"orchestrationInfo": SOL001})
    assert (r.vcpu, r.memory_mb, r.disk_gb) == (2.0, 512, 3.0)
    assert r.volumes == (VolumeSpec("VirtualStorage", 2.0),)
    assert (r.ports, r.env, r.command, r.extra) == ((), {}, (), {})


def test_tosca_derived_types_and_unknown_nodes():
    doc = tosca({
        "edge": {"type": "my.nodes.EdgeApp",
                 "properties": {"num_cpus": 2, "mem_size": "2 GiB", "disk_size": "4 GB"}},
        "net": {"type": "tosca.nodes.network.Network"},          # ignored: the MEP's business
        "disk": {"type": "my.nodes.Disk", "properties": {"size": "512 MiB",
                                                         "deletion_policy": "RETAIN"}},
        "sw": {"type": "SoftwareComponent",
               "artifacts": {"install": {"type": "tosca.artifacts.Implementation.Bash",
                                         "file": "scripts/install.sh"},
                             "sw_image": {"type": "tosca.artifacts.nfv.SwImage",
                                          "file": "Artifacts/sample-vm.qcow2"}},
               "interfaces": {"Standard": {"create": "rm -rf /"}}},
    })
    doc["node_types"] = {"my.nodes.EdgeApp": {"derived_from": "my.nodes.Base"},
                         "my.nodes.Base": {"derived_from": "tosca.nodes.Compute"},
                         "my.nodes.Disk": {"derived_from": "tosca.nodes.BlockStorage"},
                         "my.nodes.Loop": {"derived_from": "my.nodes.Loop"}}
    r = rr_vm({"orchestrationInfo": doc})
    assert (r.vcpu, r.memory_mb, r.disk_gb) == (2.0, 2048, 4.0)
    assert r.volumes == (VolumeSpec("disk", 0.5, None, True),)
    doc["topology_template"]["node_templates"]["loop"] = {"type": "my.nodes.Loop"}
    assert rr_vm({"orchestrationInfo": doc}) == r                # a derived_from cycle ends


@pytest.mark.parametrize("nodes, says", [
    ({"a": {"type": "Application"}, "b": {"type": "tosca.nodes.Compute"}}, "2 compute nodes"),
    ({"a": {"type": "Application", "properties": {"num_cpus": 1},
            "capabilities": {"host": {"properties": {"num_cpus": 2}}}}},
     "properties.num_cpus says 1 but"),
    ({"a": {"type": "Application", "properties": {"mem_size": 256}}}, "is not a TOSCA size"),
    ({"a": {"type": "Application", "properties": {"mem_size": "1 TiB"}}}, "at most 262144 MiB"),
    ({"a": {"type": "Application", "properties": {"num_cpus": 128}}}, "num_cpus"),
    ({"a": {"type": "Application", "properties": {"num_cpus": 0.5}}}, "whole number of vCPUs"),
    ({"a": {"type": "Application", "properties": {"disk_size": "3 TB"}}}, "at most 2048 GiB"),
    ({"a": {"type": "Application", "capabilities": {"virtual_compute": {"properties": {
        "virtual_local_storage": [{"size_of_storage": "1 GB"}] * 2}}}}}, "at most 1"),
    ({"a": {"type": "SoftwareComponent", "properties": {"image": "other-vm"}}},
     "names image 'other-vm' but app app1 was onboarded with image 'sample-vm'"),
    ({"a": {"type": "tosca.nodes.nfv.Vdu.Compute",
            "properties": {"sw_image_data": {"name": "cirros"}}}}, "names image 'cirros'"),
    ({"a": {"type": "SoftwareComponent", "artifacts": {"image": "http://x/evil.qcow2"}}},
     "names image"),
    ({"v": {"type": "LocalVolume", "properties": {"size": "0 MB"}}}, "size"),
    ({"v": {"type": "LocalVolume", "properties": {"size": "1 GB", "deletion_policy": "yes"}}},
     "deletion_policy"),
    ({"v": {"type": "tosca.nodes.nfv.Vdu.VirtualBlockStorage", "properties": {
        "virtual_block_storage_data": {"size_of_storage": "1 GB"},
        "sw_image_data": {"name": "sample-vm"}}}}, "volumes made from an image"),
    ({"v": {"type": "LocalVolume", "properties": {"name": "d", "size": "1 GB"}},
      "w": {"type": "LocalVolume", "properties": {"name": "d", "size": "1 GB"}}}, "used twice"),
    ({"a": "Application"}, "must be a mapping with a 'type'"),
    ({"a": {"type": "Application", "capabilities": []}}, "capabilities: must be a mapping"),
])
def test_tosca_refusals(nodes, says):
    assert says in refused(rr_vm, {"orchestrationInfo": tosca(nodes)})


def test_many_tosca_volumes_refused():
    nodes = {f"v{i}": {"type": "LocalVolume", "properties": {"size": "1 GB"}} for i in range(17)}
    assert "at most 16" in refused(rr_vm, {"orchestrationInfo": tosca(nodes)})


def test_parse_does_not_modify_the_callers_object():
    doc = deployment(resources={"limits": {"cpu": "1"}})
    before = copy.deepcopy(doc)
    rr_container({"orchestrationInfo": doc})
    decide_manner({"orchestrationInfo": doc}, CONTAINER)
    assert doc == before and parse(doc).doc is doc


# -- any value anywhere: InvalidInput or a valid result, never a crash ------------

HOSTILE = [None, True, 0, -1, 1e308, float("nan"), "", "x\n--rm", "-" * 5000, [], [[]], {},
           {"a": []}, [{"name": []}], {"name": {}}, ["--privileged"]]


def _mutations(doc, path=()):
    """Every copy of `doc` with one node (leaf or subtree) replaced by each
    hostile value."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        for bad in HOSTILE:
            yield path + (key,), bad
        yield from _mutations(value, path + (key,))


def _replace(doc, path, bad):
    doc = copy.deepcopy(doc)
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = bad
    return doc


@pytest.mark.parametrize("base, manner, image", [
    (yaml.safe_load(POD_YAML), CONTAINER, REF),
    (yaml.safe_load(VM_TOSCA), VM, "sample-vm"),
    (yaml.safe_load(SOL001), VM, "sample-vm"),
])
def test_no_value_anywhere_crashes(base, manner, image):
    full = copy.deepcopy(base)
    if manner == CONTAINER:     # make sure the Pod has every section read
        c = full["spec"]["containers"][0]
        c.update(env=[{"name": "A", "value": "1"}], command=["/bin/sh"], args=["-c", "x"],
                 volumeMounts=[{"name": "v", "mountPath": "/v"}])
        c["ports"][0].update(hostPort=8080, hostIP="127.0.0.1")
        full["spec"]["volumes"] = [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}]
        full["metadata"]["annotations"] = {"mecorch/retain-volumes": "v"}
    a = appd(virtualStorageDescriptor=[{"id": "v", "sizeOfStorage": 1}])
    a["swImageDescriptor"]["name"] = "sample-vm" if manner == VM else "mecorch/sample-http"
    count = 0
    for path, bad in _mutations(full):
        doc = _replace(full, path, bad)
        count += 1
        for info in (doc, yaml.safe_dump(doc)):
            try:
                decide_manner({"orchestrationInfo": info}, manner)
                r = resource_request("i1", a, manner, image, {"orchestrationInfo": info})
            except InvalidInput:
                continue
            assert isinstance(r, ResourceRequest) and r.image == image
            assert 0.01 <= r.vcpu <= 64 and 4 <= r.memory_mb <= 262144
    assert count > 100


def test_no_descriptor_value_crashes():
    request = {"deploymentType": "CONTAINER",
               "virtualComputeDescriptor": {"virtualCpu": {"numVirtualCpu": 1},
                                            "virtualMemory": {"virtualMemSize": 128}},
               "virtualStorageDescriptor": [{"id": "d", "typeOfStorage": "BLOCK",
                                             "sizeOfStorage": 1, "deletionPolicy": "RETAIN"}]}
    a = appd(virtualStorageDescriptor=[{"id": "e", "sizeOfStorage": 2}])
    for which in ("request", "appd"):
        for path, bad in _mutations(request if which == "request" else a):
            req = _replace(request, path, bad) if which == "request" else request
            ad = _replace(a, path, bad) if which == "appd" else a
            try:
                decide_manner(req, CONTAINER)
                r = resource_request("i1", ad, CONTAINER, REF, req)
            except InvalidInput:
                continue
            assert isinstance(r, ResourceRequest)
