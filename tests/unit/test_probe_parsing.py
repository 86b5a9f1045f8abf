"""Health checks as the request and the AppD state them (mecorch.spec.probes):
every Kubernetes Probe field read with its default and range, every field
mecorch does not honour refused naming it, the AppD extension for VMs."""

from __future__ import annotations

import copy

import pytest

from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.states import DeploymentType
from mecorch.package.appd import validate_appd
from mecorch.spec.orchestration_info import details, parse
from mecorch.spec.probes import Probe, Probes, probes_of

CONTAINER, VM = DeploymentType.CONTAINER, DeploymentType.VM
C = "orchestrationInfo.spec.containers[0]"


def pod(**container) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "x:1",
                                     "ports": [{"containerPort": 8080, "name": "web"}],
                                     **container}]}}


def of(doc: dict, appd: dict | None = None, manner=CONTAINER) -> Probes:
    parsed = parse(doc)
    details(parsed)             # what the plan checks first
    return probes_of(appd or {}, manner, parsed)


def refused(doc: dict, appd: dict | None = None, manner=CONTAINER) -> str:
    with pytest.raises(InvalidInput) as e:
        of(doc, appd, manner)
    return e.value.detail


def test_defaults_are_kubernetes_ones():
    p = of(pod(readinessProbe={"tcpSocket": {"port": 8080}})).readiness
    assert p == Probe("tcp", port=8080, initial_delay_s=0, period_s=10, timeout_s=1,
                      success_threshold=1, failure_threshold=3)


def test_every_field_is_read():
    p = of(pod(livenessProbe={
        "httpGet": {"path": "/healthz", "port": "web", "scheme": "HTTP",
                    "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
        "initialDelaySeconds": 5, "periodSeconds": 2, "timeoutSeconds": 3,
        "successThreshold": 1, "failureThreshold": 4})).liveness
    assert p == Probe("http", port=8080, path="/healthz", headers=(("X-Probe", "1"),),
                      initial_delay_s=5, period_s=2, timeout_s=3, success_threshold=1,
                      failure_threshold=4)
    r = of(pod(readinessProbe={"exec": {"command": ["cat", "/ok"]}, "successThreshold": 2}))
    assert r.readiness.action == "exec" and r.readiness.command == ("cat", "/ok")
    assert r.readiness.success_threshold == 2
    s = of(pod(startupProbe={"tcpSocket": {"port": 80}, "failureThreshold": 30}))
    assert s.startup.failure_threshold == 30 and s.liveness is None


def test_a_deployment_is_read_too():
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "spec": {"template": {"spec": pod(readinessProbe={"tcpSocket": {"port": 80}})
                                 ["spec"]}}}
    assert of(dep).readiness.port == 80


def test_stored_form_round_trips():
    ps = of(pod(readinessProbe={"httpGet": {"port": 80, "httpHeaders": [{"name": "A",
                                                                         "value": "b"}]}},
                livenessProbe={"exec": {"command": ["true"]}}))
    assert Probes.from_doc(ps.to_doc()) == ps
    assert not Probes() and ps


@pytest.mark.parametrize("probe, field", [
    ({"grpc": {"port": 1}}, "readinessProbe.grpc"),
    ({"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5},
     "readinessProbe.terminationGracePeriodSeconds"),
    ({"httpGet": {"port": 80, "host": "10.0.0.1"}}, "readinessProbe.httpGet.host"),
    ({"httpGet": {"port": 80, "scheme": "HTTPS"}}, "readinessProbe.httpGet.scheme"),
    ({"httpGet": {"port": 80, "pth": "/"}}, "'pth'"),
    ({"httpGet": {"path": "/"}}, "readinessProbe.httpGet.port"),
    ({"httpGet": {"port": 80, "path": "no-slash"}}, "readinessProbe.httpGet.path"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "A", "value": "x\r\nB: y"}]}},
     "readinessProbe.httpGet.httpHeaders[0].value"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"name": "A B"}]}},
     "readinessProbe.httpGet.httpHeaders[0].name"),
    ({"httpGet": {"port": "admin"}}, "readinessProbe.httpGet.port"),
    ({"httpGet": {"port": 0}}, "readinessProbe.httpGet.port"),
    ({"tcpSocket": {"port": "\u00b2"}}, "readinessProbe.tcpSocket.port"),   # str.isdigit, not int
    ({"tcpSocket": {"port": 80, "host": "x"}}, "readinessProbe.tcpSocket.host"),
    ({"tcpSocket": {}}, "readinessProbe.tcpSocket.port"),
    ({"exec": {"command": []}}, "readinessProbe.exec.command"),
    ({"exec": {"command": ["x"], "cmd": 1}}, "'cmd'"),
    ({}, "readinessProbe: must have exactly one"),
    ({"tcpSocket": {"port": 80}, "exec": {"command": ["x"]}}, "found tcpSocket, exec"),
    ({"tcpSocket": {"port": 80}, "periodSeconds": 0}, "readinessProbe.periodSeconds"),
    ({"tcpSocket": {"port": 80}, "timeoutSeconds": 0}, "readinessProbe.timeoutSeconds"),
    ({"tcpSocket": {"port": 80}, "failureThreshold": 0}, "readinessProbe.failureThreshold"),
    ({"tcpSocket": {"port": 80}, "successThreshold": 0}, "readinessProbe.successThreshold"),
    ({"tcpSocket": {"port": 80}, "initialDelaySeconds": -1},
     "readinessProbe.initialDelaySeconds"),
    ({"tcpSocket": {"port": 80}, "periodSeconds": True}, "readinessProbe.periodSeconds"),
    ({"tcpSocket": {"port": 80}, "perodSeconds": 1}, "'perodSeconds'"),
    ("tcp", "readinessProbe: must be a mapping"),
])
def test_refusals_name_the_field(probe, field):
    assert field in refused(pod(readinessProbe=probe))


def test_success_threshold_must_be_one_for_liveness_and_startup():
    for kind in ("livenessProbe", "startupProbe"):
        msg = refused(pod(**{kind: {"tcpSocket": {"port": 80}, "successThreshold": 2}}))
        assert f"{C}.{kind}.successThreshold" in msg


def test_a_probe_field_elsewhere_in_the_container_is_still_refused():
    assert "'readinesProbe'" in refused(pod(readinesProbe={"tcpSocket": {"port": 80}}))


# -- the AppD extension --------------------------------------------------------

def appd(health) -> dict:
    return {"appDId": "a", "appName": "a", "appProvider": "p", "appSoftVersion": "1",
            "appDVersion": "1", "mecVersion": ["2.2.1"], "appDescription": "d",
            "virtualComputeDescriptor": {"virtualComputeDescId": "c",
                                         "virtualCpu": {"numVirtualCpu": 1},
                                         "virtualMemory": {"virtualMemSize": 512}},
            "swImageDescriptor": {"id": "i", "name": "i", "version": "1",
                                  "containerFormat": "BARE", "diskFormat": "QCOW2",
                                  "minDisk": 1, "minRam": 256, "size": 1,
                                  "swImage": "Artifacts/i.qcow2",
                                  "operatingSystem": "linux", "supportedVirtualisationEnvironment": ["KVM"]},
            "healthChecks": health}


def test_appd_extension_for_a_vm():
    a = appd({"readinessProbe": {"httpGet": {"port": 80, "path": "/ready"},
                                 "periodSeconds": 1},
              "livenessProbe": {"tcpSocket": {"port": 22}}})
    validate_appd(a)
    ps = probes_of(a, VM, None)
    assert ps.readiness == Probe("http", port=80, path="/ready", period_s=1)
    assert ps.liveness.action == "tcp"


@pytest.mark.parametrize("health, field", [
    ({"readinessProbe": {"exec": {"command": ["x"]}}},
     "healthChecks.readinessProbe.exec: is not supported for a VM"),
    ({"readinessProbe": {"tcpSocket": {"port": "ssh"}}}, "healthChecks.readinessProbe.tcpSocket.port"),
    ({"readynessProbe": {}}, "'readynessProbe'"),
    ([], "healthChecks: must be a mapping"),
])
def test_appd_extension_refusals(health, field):
    with pytest.raises(InvalidInput) as e:
        validate_appd(appd(health))
    assert field in e.value.detail


def test_the_container_probe_replaces_the_appds_of_its_kind():
    a = {"healthChecks": {"readinessProbe": {"tcpSocket": {"port": 1}},
                          "livenessProbe": {"tcpSocket": {"port": 2}}}}
    ps = of(pod(readinessProbe={"tcpSocket": {"port": 3}}), copy.deepcopy(a))
    assert ps.readiness.port == 3 and ps.liveness.port == 2


def test_grpc_refusal_for_a_vm_offers_no_exec():
    with pytest.raises(InvalidInput) as e:
        probes_of(appd({"livenessProbe": {"grpc": {"port": 1}}}), VM, None)
    assert "healthChecks.livenessProbe.grpc" in e.value.detail and "exec" not in e.value.detail
