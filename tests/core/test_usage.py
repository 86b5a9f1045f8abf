"""Each instance's own figures (mecorch.mepm.usage) through the real API,
/metrics, the status page and the host list, with an in-memory driver that
reads figures of its own making (support.fakes.MeteredCompute): the core's
part only (the CPU percent from two readings, what an unavailable or failed
reading shows, the host's sum, series that go with their instance). The
figures of the real backends: tests/backends/test_usage_docker.py and
test_usage_libvirt.py. Also the pure parsers of the three drivers' backend
documents."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mecorch.driverapi.model import ResourceUsage
from mecorch.kernel.errors import BackendUnavailable, UnsupportedAction
from mecorch.kernel.states import DeploymentType
from mecorch.mepm import usage as U
from support.corelab import INST, env, instantiate, onboard, terminate  # noqa: F401
from support.fakes import MeteredCompute
from support.meolab import deploy as meo_deploy, onboard as meo_onboard, system  # noqa: F401

MiB = 1 << 20


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def scrape(base: str) -> dict[str, list]:
    """metric family name -> its samples, parsed by prometheus_client's parser"""
    return {f.name: f.samples for f in text_string_to_metric_families(get(f"{base}/metrics"))}


def value(samples, name: str, **labels) -> float:
    hits = [s.value for s in samples if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, samples)
    return hits[0]


@pytest.fixture
def metered(env):  # noqa: F811
    """The env's node with a container driver that reads usage."""
    cim = MeteredCompute(DeploymentType.CONTAINER)
    env.orch.inventory.get("default").attach("cim", cim)
    env.cim = cim
    return env


def deployed(e) -> str:
    onboard(e)
    iid = e.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    assert instantiate(e, iid)["operationState"] == "COMPLETED"
    return iid


def figures(at: float, cpu_s: float, mem: int = 40 * MiB) -> ResourceUsage:
    return ResourceUsage(at=at, cpu_seconds=cpu_s, memory_bytes=mem, memory_limit_bytes=64 * MiB,
                         net_rx_bytes=1000, net_tx_bytes=5_000_000, block_read_bytes=4096,
                         block_write_bytes=20 * MiB)


def test_a_reading_shows_in_the_view_app_show_metrics_status_and_host(metered):
    e = metered
    iid = deployed(e)
    assert "resourceUsage" not in e.c.get(f"{INST}/{iid}")     # not read yet: absent
    t0 = time.time()
    e.cim.figures[iid] = figures(t0, 10.0)
    assert e.orch.usage_reader.read_all() == 1
    first = e.c.get(f"{INST}/{iid}")["resourceUsage"]
    assert first["cpuPercent"] is None          # one reading: no percent yet, not 0
    assert first["cpuSeconds"] == 10.0 and first["memoryBytes"] == 40 * MiB
    e.cim.figures[iid] = figures(t0 + 2, 11.0)  # 1 s of CPU in 2 s: 50 % of one core
    e.orch.usage_reader.read_all()
    u = e.c.get(f"{INST}/{iid}")["resourceUsage"]
    assert u == {"time": {"seconds": int(t0 + 2), "nanoSeconds": u["time"]["nanoSeconds"]},
                 "cpuPercent": 50.0, "cpuSeconds": 11.0, "memoryBytes": 40 * MiB,
                 "memoryLimitBytes": 64 * MiB, "networkRxBytes": 1000,
                 "networkTxBytes": 5_000_000, "blockReadBytes": 4096,
                 "blockWriteBytes": 20 * MiB}
    # /metrics: one series per figure, labelled instance and host only
    m = scrape(e.c.base)
    labels = {"instance": iid, "host": "default"}
    assert value(m["mecorch_instance_cpu_percent"], "mecorch_instance_cpu_percent",
                 **labels) == 50.0
    assert value(m["mecorch_instance_cpu_seconds"], "mecorch_instance_cpu_seconds_total",
                 **labels) == 11.0
    assert value(m["mecorch_instance_memory_bytes"], "mecorch_instance_memory_bytes",
                 **labels) == 40 * MiB
    assert value(m["mecorch_instance_network_transmit_bytes"],
                 "mecorch_instance_network_transmit_bytes_total", **labels) == 5_000_000
    assert value(m["mecorch_instance_block_write_bytes"],
                 "mecorch_instance_block_write_bytes_total", **labels) == 20 * MiB
    for name in ("mecorch_instance_cpu_percent", "mecorch_instance_memory_bytes",
                 "mecorch_instance_usage_read_timestamp_seconds"):
        assert {tuple(sorted(s.labels)) for s in m[name]} == {("host", "instance")}
    # the status page's instance row
    page = get(f"{e.c.base}/status")
    row = next(r for r in page.split("<tr") if f'data-instance="{iid}"' in r)
    assert "cpu 50 %, mem 40.0 MiB / 64.0 MiB" in row
    # the host's sum, as its MEPM reports it to an MEO
    host = next(h for h in e.c.get("/mecorch/v1/hosts") if h["hostId"] == "default")
    assert host["resourceUsage"]["cpuPercent"] == 50.0
    assert host["resourceUsage"]["memoryBytes"] == 40 * MiB
    assert host["resourceUsage"]["instances"] == 1
    # the CLI: `app show` on one line, `host list` the host's sum
    for argv, want in ((("app", "show", iid), "resourceUsage: cpu 50 %, memory 40.0 MiB / "
                        "64.0 MiB, net rx 1000 B tx 4.8 MiB, block read 4.0 KiB write 20.0 MiB"),
                       (("host", "list"), "default: 1 instance(s) use cpu 50 %, memory 40.0 MiB")):
        out = subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", e.c.base, *argv],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and want in out.stdout, out.stdout + out.stderr
    # terminated: gone from /metrics at once, from the reader at its next round
    assert terminate(e, iid)["operationState"] == "COMPLETED"
    m = scrape(e.c.base)
    assert not [s for s in m["mecorch_instance_memory_bytes"] if s.labels["instance"] == iid]
    e.orch.usage_reader.read_all()
    assert e.orch.usage_reader.reading(iid) is None
    assert e.orch.usage_reader.host_sum("default")["instances"] == 0


def documented(schema: str, body) -> list[str]:
    """What of `body` breaks mecorch.yaml's components/schemas/`schema`."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
    from support.etsischema import DOC_PATH, doc, errors_of, etsi_components

    def retrieve(uri: str) -> Resource:
        name = uri.rsplit("/", 1)[1]
        return Resource.from_contents({"components": etsi_components(name)},
                                      default_specification=DRAFT202012)
    reg = Registry(retrieve=retrieve).with_resource(
        DOC_PATH.as_uri(), Resource.from_contents(doc(), default_specification=DRAFT202012))
    v = jsonschema.Draft202012Validator(
        {"$ref": f"{DOC_PATH.as_uri()}#/components/schemas/{schema}"}, registry=reg)
    return errors_of(v, body)


def test_the_views_are_as_documented(metered):
    e = metered
    iid = deployed(e)
    t0 = time.time()
    for n in range(2):
        e.cim.figures[iid] = figures(t0 + n, 1.0 + n)
        e.orch.usage_reader.read_all()
    inst = e.c.get(f"{INST}/{iid}")
    assert documented("ResourceUsage", inst["resourceUsage"]) == []
    hosts = e.c.get("/mecorch/v1/hosts")
    assert [documented("EdgeHost", h) for h in hosts] == [[]]
    assert documented("ResourceUsage", {"cpuPercent": "lots"}) != []    # it can fail


def test_two_instances_sum_per_host(metered):
    e = metered
    a, b = deployed(e), e.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    assert instantiate(e, b)["operationState"] == "COMPLETED"
    t0 = time.time()
    e.cim.figures.update({a: figures(t0, 1.0, 10 * MiB), b: figures(t0, 5.0, 30 * MiB)})
    e.orch.usage_reader.read_all()
    e.cim.figures.update({a: figures(t0 + 1, 1.25, 10 * MiB), b: figures(t0 + 1, 6.0, 30 * MiB)})
    e.orch.usage_reader.read_all()
    s = e.orch.usage_reader.host_sum("default")
    assert s["cpuPercent"] == 125.0 and s["memoryBytes"] == 40 * MiB
    assert s["networkTxBytes"] == 10_000_000 and s["instances"] == 2 and s["unavailable"] == 0


def test_unavailable_shows_the_backend_s_reason_and_a_failed_read_keeps_the_last(metered):
    e = metered
    iid = deployed(e)
    e.cim.figures[iid] = UnsupportedAction("the cloud refuses server diagnostics to this user")
    e.orch.usage_reader.read_all()
    u = e.c.get(f"{INST}/{iid}")["resourceUsage"]
    assert u == {"unavailable": "the cloud refuses server diagnostics to this user"}
    m = scrape(e.c.base)
    assert not [s for s in m["mecorch_instance_memory_bytes"] if s.labels["instance"] == iid]
    t0 = time.time()
    e.cim.figures[iid] = figures(t0, 3.0)
    e.orch.usage_reader.read_all()
    e.cim.figures[iid] = BackendUnavailable("stats of abc: cannot reach dockerd")
    e.orch.usage_reader.read_all()
    u = e.c.get(f"{INST}/{iid}")["resourceUsage"]
    # the last figures, with their own time, and why they are not newer
    assert u["cpuSeconds"] == 3.0 and u["time"]["seconds"] == int(t0)
    assert u["error"] == "stats of abc: cannot reach dockerd"


def test_a_driver_without_the_verb_is_unavailable_saying_so(env):  # noqa: F811
    iid = deployed(env)             # the plain FakeCompute: no UsageReadable
    env.orch.usage_reader.read_all()
    u = env.c.get(f"{INST}/{iid}")["resourceUsage"]
    assert u == {"unavailable": "the cim driver FakeCompute reads no usage figures"}


def test_cpu_percent_from_two_readings():
    a = ResourceUsage(at=100.0, cpu_seconds=50.0)
    assert U.cpu_percent(None, a) is None
    assert U.cpu_percent(a, ResourceUsage(at=104.0, cpu_seconds=52.0)) == 50.0
    assert U.cpu_percent(a, ResourceUsage(at=104.0, cpu_seconds=1.0)) is None   # restarted
    assert U.cpu_percent(a, ResourceUsage(at=100.0, cpu_seconds=51.0)) is None  # no time
    assert U.cpu_percent(a, ResourceUsage(at=101.0, cpu_percent=7.5)) == 7.5    # the backend's


# ---------------------------------------------------------------- the drivers' parsers
def test_docker_stats_document():
    from drivers.docker_cim.stats import usage_of as _usage_of
    s = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
         "memory_stats": {"usage": 50 * MiB, "limit": 128 * MiB,
                          "stats": {"total_inactive_file": 8 * MiB}},
         "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 200},
                      "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
         "blkio_stats": {"io_service_bytes_recursive": [
             {"major": 8, "minor": 0, "op": "Read", "value": 4096},
             {"major": 8, "minor": 0, "op": "Write", "value": 8192},
             {"major": 8, "minor": 16, "op": "write", "value": 1},
             {"major": 8, "minor": 0, "op": "Total", "value": 12288}]}}
    u = _usage_of(s, 5.0)
    assert u == ResourceUsage(at=5.0, cpu_seconds=2.5, memory_bytes=42 * MiB,
                              memory_limit_bytes=128 * MiB, net_rx_bytes=101, net_tx_bytes=202,
                              block_read_bytes=4096, block_write_bytes=8193)
    # a stopped container's stats: empty memory, no figures but none invented
    stopped = _usage_of({"cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {},
                         "blkio_stats": {}}, 6.0)
    assert stopped == ResourceUsage(at=6.0)


def test_libvirt_domain_stats():
    from drivers.libvirt_vim.stats import usage_of
    st = {"cpu.time": 31_000_000_000, "balloon.maximum": 131072, "balloon.current": 131072,
          "balloon.rss": 100000, "net.count": 1, "net.0.rx.bytes": 5, "net.0.tx.bytes": 7,
          "block.count": 2, "block.0.rd.bytes": 1000, "block.0.wr.bytes": 10,
          "block.1.rd.bytes": 24, "block.1.wr.bytes": 0}
    u = usage_of(st, 1.0)
    assert u == ResourceUsage(at=1.0, cpu_seconds=31.0, memory_bytes=100000 * 1024,
                              memory_limit_bytes=131072 * 1024, net_rx_bytes=5, net_tx_bytes=7,
                              block_read_bytes=1024, block_write_bytes=10)
    # the guest's own figure when its balloon driver gives one
    u = usage_of({**st, "balloon.available": 120000, "balloon.unused": 20000}, 1.0)
    assert u.memory_bytes == 100000 * 1024
    assert usage_of({}, 2.0) == ResourceUsage(at=2.0)       # shut off: nothing


def test_nova_diagnostics():
    """Nova's 2.48 body (the shape of its API reference's example) as
    openstacksdk's ServerDiagnostics gives it to the driver."""
    from openstack.compute.v2.server_diagnostics import ServerDiagnostics
    from drivers.openstack_vim.driver import diagnostics_usage
    body = {"state": "running", "driver": "libvirt", "hypervisor": "qemu", "uptime": 46664,
            "config_drive": False, "num_cpus": 2, "num_nics": 1, "num_disks": 1,
            "cpu_details": [{"id": 0, "time": 2_000_000_000, "utilisation": None},
                            {"id": 1, "time": 1_000_000_000, "utilisation": None}],
            "memory_details": {"maximum": 128, "used": 64},
            "disk_details": [{"read_bytes": 10, "read_requests": 1, "write_bytes": 20,
                              "write_requests": 2, "errors_count": 0}],
            "nic_details": [{"mac_address": "fa:16:3e:00:00:01", "rx_octets": 30,
                             "tx_octets": 40, "rx_packets": 1, "tx_packets": 1}]}
    d = ServerDiagnostics.existing(server_id="x", **body).to_dict(computed=False)
    assert diagnostics_usage(d, 3.0) == ResourceUsage(
        at=3.0, cpu_seconds=3.0, memory_bytes=64 * MiB, memory_limit_bytes=128 * MiB,
        net_rx_bytes=30, net_tx_bytes=40, block_read_bytes=10, block_write_bytes=20)
    # a hypervisor driver that fills nothing: None, not 0
    assert diagnostics_usage({"cpu_details": [{"id": 0, "time": None}]}, 3.0) \
        == ResourceUsage(at=3.0)


def test_nova_refusing_diagnostics_is_unavailable_not_a_failure():
    """Nova's default policy gives server diagnostics to admins only: its
    403 becomes UnsupportedAction (shown as unavailable, with the reason);
    any other failure stays a failure."""
    from openstack import exceptions as sdk
    from drivers.openstack_vim.errors import diagnostics_errors
    from mecorch.kernel.errors import BackendError, NotFound
    with pytest.raises(UnsupportedAction) as got:
        with diagnostics_errors("diagnostics of server mecorch-x"):
            raise sdk.HttpException("Policy doesn't allow os_compute_api:os-server-diagnostics "
                                    "to be performed.", http_status=403)
    assert "refuses server diagnostics to this user" in got.value.detail
    assert "Policy doesn't allow" in got.value.detail
    with pytest.raises(NotFound):
        with diagnostics_errors("diagnostics"):
            raise sdk.NotFoundException("no server", http_status=404)
    with pytest.raises(BackendError):
        with diagnostics_errors("diagnostics"):
            raise sdk.HttpException("boom", http_status=500)


def test_the_meo_host_list_shows_each_host_s_sum(system):  # noqa: F811
    """A host's MEPM reports its instances' figures summed with its host
    info; the MEO's host list shows them as of its last heartbeat."""
    s = system
    cim = MeteredCompute(DeploymentType.CONTAINER, cpus=2)
    s.hosts["edge2"].inventory.get("edge2").attach("cim", cim)
    pkg = meo_onboard(s)
    iid, op = meo_deploy(s, pkg["appDId"], deploymentType="CONTAINER",
                         selectedMECHostInfo=[{"hostId": {"id": "edge2"}}])
    assert op["operationState"] == "COMPLETED", op
    t0 = time.time()
    cim.figures[iid] = figures(t0, 2.0, 24 * MiB)
    s.hosts["edge2"].usage_reader.read_all()
    cim.figures[iid] = figures(t0 + 4, 3.0, 24 * MiB)
    s.hosts["edge2"].usage_reader.read_all()
    for entry in s.meo.registry.entries():
        s.meo.registry.beat(entry)
    hosts = {h["hostId"]: h for h in s.c.get("/mecorch/v1/hosts")}
    assert hosts["edge2"]["resourceUsage"]["cpuPercent"] == 25.0
    assert hosts["edge2"]["resourceUsage"]["memoryBytes"] == 24 * MiB
    assert hosts["edge2"]["resourceUsage"]["instances"] == 1
    assert hosts["edge1"]["resourceUsage"]["instances"] == 0      # nothing there


def test_host_info_carries_the_sum_across_the_wire():
    """What a RemoteMepm reads of its host (HostInfo.from_dict of the JSON
    the host served) keeps the sum; a peer without one reads None."""
    from mecorch.mepm.contract import HostInfo
    total = {"cpuPercent": 12.5, "memoryBytes": 3 * MiB, "networkRxBytes": 1,
             "networkTxBytes": 2, "blockReadBytes": 0, "blockWriteBytes": None,
             "instances": 2, "unavailable": 1, "time": {"seconds": 1, "nanoSeconds": 2}}
    info = HostInfo("edge9", usage=total)
    assert HostInfo.from_dict(json.loads(json.dumps(info.to_dict()))).usage == total
    assert HostInfo.from_dict({"hostId": "old"}).usage is None
