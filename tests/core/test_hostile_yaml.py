"""Hostile YAML in an AppD (issue 28, finding 4): a document of a few KB
whose aliases expand it to tens of MB (or, over a 1 MB string, to ~30 GB)
is refused by the strict loader while it is read, before anything of it
is stored; and every AppD field mecorch keeps and serves is checked for its
shape, so a field that is not what MEC 010-2 (or the NFV schema of
mecorch.package.schema) says is a 400 naming it.

The attacks and the REST field checks go through a real `mecorch serve`
(a subprocess, so its memory is the daemon's own, read from
/proc/PID/status) and the REST onboarding path; its host's CIM and MEP are
the in-memory drivers of tests/support/fakes.py, so no backend is touched."""

from __future__ import annotations

import hashlib
import os
import resource
import time
from pathlib import Path

import pytest
import yaml

from mecorch.kernel import yamlsafe
from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.errors import InvalidInput
from mecorch.package.appd import validate_appd
from support.lab import Serve
from support.packages import appd_package, load_appd

REPO = Path(__file__).resolve().parents[2]
PKGS = "/app_pkgm/v1/app_packages"


def expanding_appd(string_bytes: int, levels: int = 9) -> bytes:
    """A valid container AppD whose appServiceOptional holds an anchor on a
    string of `string_bytes` and `levels` lists, each three aliases of the
    level before: 3**levels copies of the string once expanded."""
    appd = load_appd("container")
    text = yaml.safe_dump(appd, sort_keys=False)
    lines = ["appServiceOptional:", f"- &a0 {'x' * string_bytes}"]
    lines += [f"- &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)]
    return (text + "\n".join(lines) + "\n").encode()


def expanded_bytes(string_bytes: int, levels: int = 9) -> int:
    return sum(string_bytes * 3 ** i for i in range(levels + 1))


# -- a real `mecorch serve` -------------------------------------------------------------

def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _cap_memory():
    # Should the bound be missing, the daemon must not take the shared
    # machine with it: 3 GB of address space, then MemoryError.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


# `mecorch serve` itself, with one host whose CIM and MEP are the in-memory
# drivers of tests/support/fakes.py (added as entry points in the subprocess): the
# package is onboarded as far as a real one, and no backend is touched.
LAUNCHER = """
import sys
from importlib import metadata
sys.path.insert(0, {tests!r})
from support.fakes import FakeCompute, FakeMep
from mecorch.kernel.states import DeploymentType

class FakeCIM(FakeCompute):
    kind = "cim"
    def __init__(self, config):
        super().__init__(DeploymentType.CONTAINER)

class FakeMEP(FakeMep):
    kind = "mep"
    def __init__(self, config):
        super().__init__()

_entry_points = metadata.entry_points
def entry_points(**kw):
    eps = _entry_points(**kw)
    if kw.get("group") == "mecorch.drivers":
        eps = metadata.EntryPoints([*eps] + [
            metadata.EntryPoint(n, "__main__:" + c, "mecorch.drivers")
            for n, c in (("fake-cim", "FakeCIM"), ("fake-mep", "FakeMEP"))])
    return eps
metadata.entry_points = entry_points

from mecorch.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    cfg = {"state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
           "hosts": [{"id": "default", "cim": {"driver": "fake-cim",
                                                  "registry": "127.0.0.1:5999"},
                      "mep": {"driver": "fake-mep"}}]}
    server = Serve(cfg, tmp, launcher=LAUNCHER.format(tests=str(REPO / "tests")),
                   env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=_cap_memory,
                   timeout_s=30, client_timeout_s=120)
    try:
        server.start()
        yield {"c": server.client, "pid": server.pid, "tmp": tmp}
    finally:
        server.stop(timeout_s=15)


def test_the_serve_of_these_tests_onboards_a_good_package(serve, tmp_path):
    """The daemon the attacks go to onboards a sound package, so a refusal
    below is the check under test, not a host that cannot take it."""
    got = _onboard(serve["c"], appd_package(tmp_path, {**load_appd("container"), **VALID}))
    assert isinstance(got, dict) and got["onboardingState"] == "ONBOARDED", got
    serve["c"].call("PATCH", f"{PKGS}/{got['id']}", {"operationState": "DISABLED"})
    serve["c"].call("DELETE", f"{PKGS}/{got['id']}")
    assert _kept(serve) == []


def _onboard(c: Client, path: Path) -> ApiError | dict:
    data = path.read_bytes()
    try:
        pkg, _ = c.post(PKGS, {"appPkgName": "hostile", "appPkgVersion": "1.0",
                               "appPkgPath": str(path),
                               "checksum": {"algorithm": "SHA-256",
                                            "hash": hashlib.sha256(data).hexdigest()}})
        return pkg
    except ApiError as e:
        return e


def _kept(serve) -> list[str]:
    """What of a refused package the server still has: resources, files."""
    left = [p["id"] for p in serve["c"].get_all(PKGS)]
    pkg_dir = serve["tmp"] / "state" / "packages"
    if pkg_dir.is_dir():
        left += [str(p) for p in pkg_dir.rglob("*") if p.is_file()]
    return left


class TestYamlExpansionBounded:
    def test_the_3_7_kb_expanding_appd_is_refused_without_growing_the_daemon(
            self, serve, tmp_path):
        text = expanding_appd(2048)
        assert len(text) < 4096 and expanded_bytes(2048) > 40_000_000
        path = appd_package(tmp_path, text)
        c, pid = serve["c"], serve["pid"]
        # warm up: the same path refused for another reason, so the code it
        # runs is loaded before idle is measured
        (tmp_path / "w").mkdir()
        warm = _onboard(c, appd_package(tmp_path / "w", b"appDId: [1\n"))
        assert isinstance(warm, ApiError) and warm.status == 400
        Path(f"/proc/{pid}/clear_refs").write_text("5")     # VmHWM := VmRSS
        idle = _status(pid)
        t0 = time.monotonic()
        got = _onboard(c, path)
        took = time.monotonic() - t0
        after = _status(pid)
        print(f"\nidle VmRSS {idle['VmRSS']} kB, peak VmHWM {after['VmHWM']} kB, "
              f"after VmRSS {after['VmRSS']} kB, refused in {took * 1000:.0f} ms")
        assert isinstance(got, ApiError), f"onboarded: {got}"
        assert got.status == 400 and got.body.get("status") == 400, got.body
        assert "expand" in got.body["detail"], got.body
        assert after["VmHWM"] - idle["VmRSS"] <= 10 * 1024
        assert _kept(serve) == []

    def test_the_1_mb_string_variant_is_refused_quickly(self, serve, tmp_path):
        text = expanding_appd(yamlsafe.MAX_YAML_BYTES - 8192)
        assert len(text) <= yamlsafe.MAX_YAML_BYTES
        # ~30 GB once expanded: never sent to a daemon that would expand it
        with pytest.raises(InvalidInput, match="expand"):
            yamlsafe.load_yaml(text)
        path = appd_package(tmp_path, text)
        t0 = time.monotonic()
        got = _onboard(serve["c"], path)
        took = time.monotonic() - t0
        print(f"\n1 MB variant refused in {took * 1000:.0f} ms")
        assert isinstance(got, ApiError) and got.status == 400, got
        assert "expand" in got.body["detail"], got.body
        assert took < 10
        assert _kept(serve) == []


class TestYamlsafeBound:
    """The bound itself: what aliases expand to is counted while the
    document is composed, whatever the alias count."""

    def test_expansion_past_the_bound_is_refused(self):
        with pytest.raises(InvalidInput, match="expand"):
            yamlsafe.load_yaml(expanding_appd(2048), "AppD")

    def test_few_aliases_over_a_large_string_are_refused(self):
        big = "y" * (yamlsafe.MAX_YAML_BYTES // 2)
        doc = f"a: &s {big}\nb: [*s, *s, *s, *s, *s, *s, *s, *s, *s, *s]\n"
        with pytest.raises(InvalidInput, match="expand"):
            yamlsafe.load_yaml(doc)

    def test_aliases_within_the_bound_still_load(self):
        doc = "base: &b {cpu: 1, mem: 64}\nx: *b\ny: [*b, *b]\n"
        got = yamlsafe.load_yaml(doc)
        assert got["x"] == got["base"] == {"cpu": 1, "mem": 64} and len(got["y"]) == 2

    def test_a_node_that_aliases_itself_is_refused(self):
        with pytest.raises(InvalidInput, match="itself"):
            yamlsafe.load_yaml("a: &r [1, *r]\n")
        with pytest.raises(InvalidInput, match="itself"):
            yamlsafe.load_yaml("a: &r {k: *r}\n")

    def test_the_bound_counts_what_is_expanded_not_the_alias_count(self):
        # 27 aliases (under MAX_ALIASES) but 3**9 copies of 200 bytes (~5.9 MB)
        assert 27 <= yamlsafe.MAX_ALIASES
        with pytest.raises(InvalidInput, match="expand"):
            yamlsafe.load_yaml(expanding_appd(200, levels=9).decode())
        yamlsafe.load_yaml(expanding_appd(200, levels=3).decode())     # 8,000 bytes: fine


# -- every AppD field checked ------------------------------------------------------------

CATEGORY = {"href": "https://mep.example/catalogue/rni", "id": "rni", "name": "RNI",
            "version": "v2"}
TRANSPORT = {"type": "REST_HTTP", "protocol": "HTTP", "version": "2.0",
             "security": {"oAuth2Info": {"grantTypes": ["OAUTH2_CLIENT_CREDENTIALS"],
                                         "tokenEndpoint": "https://mep.example/token"}}}
TRANSPORT_DEP = {"transport": TRANSPORT, "serializers": ["JSON"], "labels": ["rest"]}
SERVICE_DEP = {"serName": "rnis", "version": "2.1.1", "serCategory": CATEGORY,
               "serTransportDependencies": [TRANSPORT_DEP], "requestedPermissions": ["read"]}
# A value of the MEC 010-2 shape for each field mecorch used to keep as given
VALID = {
    "appServiceRequired": [SERVICE_DEP],
    "appServiceOptional": [{"serName": "location", "version": "2.1.1"}],
    "appServiceProduced": [{"serName": "sample", "version": "1.0", "serCategory": CATEGORY,
                            "transportsSupported": [{"transport": TRANSPORT,
                                                     "serializers": ["JSON", "XML"]}]}],
    "appFeatureRequired": [{"featureName": "UserApps", "version": "1.0"}],
    "appFeatureOptional": [{"featureName": "UEIdentity", "version": "1.0"}],
    "transportDependencies": [TRANSPORT_DEP],
    "appLatency": {"maxLatency": 20_000_000},
    "terminateAppInstanceOpConfig": {"minGracefulTerminationTimeout": 10,
                                     "maxRecommendedGracefulTerminationTimeout": 60},
    "changeAppInstanceStateOpConfig": {"minGracefulStopTimeout": 5,
                                       "maxRecommendedGracefulStopTimeout": 30},
    "appExtCpd": [{"inherited_attributes": {"cpdId": "ext-1", "layerProtocol": ["IPV4"]}}],
}
# (field, a wrong value, the field path the refusal names)
WRONG = [
    ("appServiceOptional", "rnis", "appServiceOptional"),
    ("appServiceOptional", [[["x"]]], "appServiceOptional[0]"),
    ("appServiceOptional", [{"serName": "x"}], "appServiceOptional[0]"),
    ("appServiceOptional", [{"serName": "x", "version": "1", "extra": 1}],
     "appServiceOptional[0]"),
    ("appServiceOptional", [{"serName": "x" * 5000, "version": "1"}],
     "appServiceOptional[0].serName"),
    ("appServiceOptional", [{"serName": "x", "version": "1"}] * 65, "appServiceOptional"),
    ("appServiceRequired", [{**SERVICE_DEP, "serCategory": "rni"}],
     "appServiceRequired[0].serCategory"),
    ("appServiceRequired", [{**SERVICE_DEP, "requestedPermissions": [{"a": ["b"] * 9}]}],
     "appServiceRequired[0].requestedPermissions[0]"),
    ("appServiceRequired", [{**SERVICE_DEP, "serTransportDependencies": [
        {**TRANSPORT_DEP, "serializers": ["YAML"]}]}],
     "appServiceRequired[0].serTransportDependencies[0].serializers[0]"),
    ("appServiceProduced", [{"serName": "s", "version": "1",
                             "transportsSupported": [{"transport": TRANSPORT}]}],
     "appServiceProduced[0].transportsSupported[0]"),
    ("appFeatureRequired", [{"featureName": "UserApps"}], "appFeatureRequired[0]"),
    ("appFeatureOptional", {"featureName": "UEIdentity", "version": "1"},
     "appFeatureOptional"),
    ("transportDependencies", [{**TRANSPORT_DEP, "transport": {**TRANSPORT,
                                                               "type": "CARRIER_PIGEON"}}],
     "transportDependencies[0].transport.type"),
    ("transportDependencies", [{**TRANSPORT_DEP, "labels": []}],
     "transportDependencies[0].labels"),
    ("transportDependencies", [{**TRANSPORT_DEP, "transport": {
        **TRANSPORT, "security": {"oAuth2Info": {"grantTypes": ["ANY"]}}}}],
     "transportDependencies[0].transport.security.oAuth2Info.grantTypes[0]"),
    ("appLatency", 5, "appLatency"),
    ("appLatency", {"maxLatency": "5ms"}, "appLatency.maxLatency"),
    ("appLatency", {"maxLatency": 2**32}, "appLatency.maxLatency"),
    ("appLatency", {"maxLatency": 5, "minLatency": 1}, "appLatency"),
    ("terminateAppInstanceOpConfig", "graceful", "terminateAppInstanceOpConfig"),
    ("terminateAppInstanceOpConfig", {"minGracefulTerminationTimeout": -1},
     "terminateAppInstanceOpConfig.minGracefulTerminationTimeout"),
    ("changeAppInstanceStateOpConfig", {"minGracefulStopTimeout": 1, "x": 1},
     "changeAppInstanceStateOpConfig"),
    ("appExtCpd", [{"inherited_attributes": {"cpdId": "e", "layerProtocol": ["SMOKE"]}}],
     "appExtCpd[0].inherited_attributes.layerProtocol[0]"),
    ("appExtCpd", [{}], "appExtCpd[0]"),
]
# the NFV structures and rules mecorch reads: their other keys, closed too
_S = load_appd("container")
_VCD, _SWD = _S["virtualComputeDescriptor"], _S["swImageDescriptor"]
_DNS, _TR = _S["appDNSRule"][0], _S["appTrafficRule"][0]
WRONG += [
    ("virtualComputeDescriptor", {**_VCD, "virtualCpu": {"numVirtualCpu": 1,
                                                         "cpuArchitecure": "x86_64"}},
     "virtualComputeDescriptor.virtualCpu"),
    ("virtualComputeDescriptor", {**_VCD, "logicalNode": [[[[["deep"]]]]]},
     "virtualComputeDescriptor.logicalNode[0][0]"),
    ("virtualComputeDescriptor", {**_VCD, "numaEnabled": "yes"},
     "virtualComputeDescriptor"),
    ("virtualComputeDescriptor", {**_VCD, "virtualMemory": {"virtualMemSize": 64,
                                                            "numaEnabled": "x" * 300}},
     "virtualComputeDescriptor.virtualMemory.numaEnabled"),
    ("swImageDescriptor", {**_SWD, "swImageURL": "http://x"}, "swImageDescriptor"),
    ("swImageDescriptor", {**_SWD, "virtualComputeDescriptor": _VCD}, "swImageDescriptor"),
    ("swImageDescriptor", {**_SWD, "operatingSystem": ["linux"] * 3},
     "swImageDescriptor.operatingSystem"),
    ("virtualStorageDescriptor", [{"id": "v", "typeOfStorage": "BLOCK", "sizeOfStorage": 1,
                                   "mountPoint": "/data"}], "virtualStorageDescriptor[0]"),
    ("appDNSRule", [{**_DNS, "priority": 1}], "appDNSRule[0]"),
    ("appTrafficRule", [{**_TR, "state": "ACTIVE"}], "appTrafficRule[0]"),
    ("appTrafficRule", [{**_TR, "dstInterface": [{"interfaceType": "TUNNEL",
                                                  "tunnelInfo": {"tunnelType": "VXLAN"}}]}],
     "appTrafficRule[0].dstInterface[0].tunnelInfo.tunnelType"),
    ("appTrafficRule", [{**_TR, "dstInterface": [{"interfaceType": "IP", "dstIpAddress":
                                                  "10.0.0.1"}]}],
     "appTrafficRule[0].dstInterface[0]"),
]


def _detail(e) -> str:
    return e.body["detail"] if isinstance(e, ApiError) else str(e)


class TestAppdFieldsValidated:
    def test_each_field_of_the_mec_010_2_shape_is_accepted(self):
        appd = {**load_appd("container"), **VALID}
        validate_appd(appd)

    def test_the_nfv_attributes_of_the_schema_are_accepted(self):
        appd = load_appd("container")
        appd["virtualComputeDescriptor"] = {
            **_VCD, "logicalNode": [{"id": "n1", "logicalNodeRequirementDetail": [
                {"key": "numa", "value": "0"}]}],
            "virtualCpu": {"numVirtualCpu": 1, "cpuArchitecture": "x86_64",
                           "virtualCpuClock": 2400},
            "virtualMemory": {"virtualMemSize": 64, "numaEnabled": False}}
        appd["swImageDescriptor"] = {**_SWD, "operatingSystem": "linux",
                                     "supportedVirtualisationEnvironment": ["docker"]}
        appd["virtualStorageDescriptor"] = [{"id": "v", "typeOfStorage": "BLOCK",
                                             "sizeOfStorage": 1, "rdmaEnabled": False}]
        validate_appd(appd)

    @pytest.mark.parametrize("field,value,named", WRONG,
                             ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
    def test_a_wrong_shape_is_refused_naming_the_field(self, field, value, named):
        appd = {**load_appd("container"), field: value}
        with pytest.raises(InvalidInput) as e:
            validate_appd(appd)
        assert str(e.value).startswith(named), str(e.value)

    @pytest.mark.parametrize("field", sorted(VALID))
    def test_through_the_rest_api_a_wrong_shape_is_a_400_naming_the_field(
            self, serve, tmp_path, field):
        wrong = [[["nested"] * 3] * 3] if isinstance(VALID[field], list) else ["not", "it"]
        appd = {**load_appd("container"), field: wrong}
        got = _onboard(serve["c"], appd_package(tmp_path, appd))
        assert isinstance(got, ApiError), f"onboarded: {got}"
        assert got.status == 400 and got.body["status"] == 400, got.body
        assert field in got.body["detail"], got.body
        assert _kept(serve) == []
