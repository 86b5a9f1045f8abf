"""Overhead of deploy + terminate through mecorch's REST API over the same
backend work done directly, interleaved in one run (alternating who goes
first), p50 and p99 of each and their ratios.

- containers: API = create instance, instantiate (no rules), wait for the
  op, terminate FORCEFUL, wait, delete the instance record; direct = the
  docker-py calls of bench/cim_overhead.py (pull by digest, pause
  container on the network, app container in its netns with the limits,
  inspect; remove both).
- VMs: API = the same, plus an HTTP answer from the guest before
  terminating; direct = bench/vim_overhead.py's bare libvirt calls (overlay
  volume, define, create, lease, HTTP; destroy, undefine, delete volume),
  on the pool and network mecorch made.

Used by bench/run.py (it owns the lab); not a standalone script.
"""

from __future__ import annotations

import dataclasses
import time

import docker

from lab import NO_RULES, Lab, pct

import vim_overhead as vo                              # noqa: E402
from drivers.docker_cim.pause import PAUSE_IMAGE      # noqa: E402
from drivers.docker_cim.plan import make_plan         # noqa: E402
from drivers.libvirt_vim import xmlrender as X        # noqa: E402
from mecorch.spec.decision import resource_request         # noqa: E402
from mecorch.kernel.states import DeploymentType             # noqa: E402


class DirectDocker:
    """What a hand-written docker-py script does for one instance, making
    the objects mecorch's Docker CIM makes for the same AppD (the plan of
    drivers/docker_cim/plan.py: the pause container on the network with
    the resolver option and the published ports, the app container in its
    netns with the limits, environment and labels; then the address read).
    Terminate removes both with force (what a script would do: one kill +
    remove each)."""

    def __init__(self, lab: Lab, app_d_id: str):
        cim = lab.cfg["hosts"][0]["cim"]
        pkg = lab.pkg_doc(app_d_id)
        self.appd, self.image = pkg["_appd"], pkg["_image"]
        self.tag, self.network = lab.tag, cim["network"]
        self.registry = cim.get("registry", "127.0.0.1:5000")
        self.api = docker.APIClient(base_url="unix:///var/run/docker.sock", version="auto")
        self.repo = self.image.rpartition(":")[0]
        self.digest = self.api.inspect_distribution(self.image)["Descriptor"]["digest"]
        net = self.api.inspect_network(self.network)
        self.dns = [net["IPAM"]["Config"][0]["Gateway"]]
        self.mp1_url = f"http://{self.dns[0]}:{lab.serve.port}/mec_app_support/v1"

    def deploy(self, iid: str) -> dict:
        req = resource_request(iid, self.appd, DeploymentType.CONTAINER, self.image, {})
        req = dataclasses.replace(req, env={
            **req.env, "MEC_APP_INSTANCE_ID": iid, "MEC_APP_TOKEN": "t" * 43,
            "MEC_MP1_URL": self.mp1_url})
        plan = make_plan(req)
        api = self.api
        for _ in api.pull(self.repo, tag=self.digest, stream=True, decode=True):
            pass
        labels = {"mecorch.bench": self.tag, "bench.instance": iid}
        pause = api.create_container(
            PAUSE_IMAGE, name=f"mecb-{iid}-pause", labels={**labels, "bench.role": "pause"},
            ports=list(plan.exposed) or None,
            host_config=api.create_host_config(network_mode=self.network,
                                               port_bindings=plan.ports or None,
                                               dns=self.dns))["Id"]
        api.start(pause)
        app = api.create_container(
            f"{self.repo}@{self.digest}", name=f"mecb-{iid}-app", command=plan.command,
            entrypoint=plan.entrypoint, environment=plan.env or None,
            labels={**labels, "bench.role": "app", "bench.image": self.image},
            host_config=api.create_host_config(network_mode=f"container:{pause}",
                                               nano_cpus=plan.nano_cpus,
                                               mem_limit=plan.mem_bytes))["Id"]
        api.start(app)
        ip = api.inspect_container(pause)["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        return {"app": app, "pause": pause, "ip": ip}

    def destroy(self, h: dict) -> None:
        self.api.remove_container(h["app"], force=True)
        self.api.remove_container(h["pause"], force=True)


def _api_cycle(lab: Lab, app_d_id: str, reach=None,
               terminate: dict | None = None) -> tuple[float, ...]:
    """(deploy, terminate) seconds, or with `reach` (deploy, time-to-HTTP,
    terminate): deploy = create + instantiate + op COMPLETED; terminate =
    terminate + op COMPLETED + delete of the record."""
    api = lab.api
    t0 = time.perf_counter()
    iid, op = api.deploy(app_d_id, **NO_RULES)
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"deploy failed: {op.get('error')}")
    t1 = time.perf_counter()
    if reach is not None:
        info = api.get(f"/app_lcm/v1/app_instances/{iid}")
        reach(info["allocatedResources"]["network"][0]["ip"])
    t2 = time.perf_counter()
    op = api.terminate(iid, terminate)
    if op["operationState"] != "COMPLETED":
        raise RuntimeError(f"terminate failed: {op.get('error')}")
    api.delete(iid)
    t3 = time.perf_counter()
    if reach is None:
        return t1 - t0, t3 - t2
    return t1 - t0, t2 - t0, t3 - t2


def _summary(res: dict[str, list[tuple[float, ...]]], target50: float, target99: float) -> dict:
    """p50/p99 of each phase and their ratios. Rows are (deploy, terminate)
    or (deploy, time-to-HTTP, terminate); the cycle is deploy + terminate
    (the time to HTTP is the guest's boot, reported on its own)."""
    out = {}
    phases = (("deploy", 0), ("http", 1), ("terminate", 2)) if len(res["api"][0]) == 3 \
        else (("deploy", 0), ("terminate", 1))
    for name, rows in res.items():
        for what, i in phases + (("cycle", None),):
            vals = [r[0] + r[-1] if i is None else r[i] for r in rows]
            out[f"{name}_{what}_p50_ms"] = round(pct(vals, 50) * 1e3, 1)
            out[f"{name}_{what}_p99_ms"] = round(pct(vals, 99) * 1e3, 1)
        out[f"{name}_samples_ms"] = [[round(x * 1e3, 1) for x in r] for r in rows]
    for what, _ in phases + (("cycle", None),):
        for p in ("p50", "p99"):
            out[f"ratio_{what}_{p}"] = round(out[f"api_{what}_{p}_ms"]
                                             / out[f"direct_{what}_{p}_ms"], 3)
    out["n"] = len(res["api"])
    out["met"] = out["ratio_cycle_p50"] <= target50 and out["ratio_cycle_p99"] <= target99
    return out


def containers(lab: Lab, app_d_id: str, n: int = 30) -> dict:
    _api_cycle(lab, app_d_id)                       # warm-up: network, pull, driver open
    direct = DirectDocker(lab, app_d_id)

    def via_direct(i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        h = direct.deploy(f"{lab.tag}d{i}")
        t1 = time.perf_counter()
        direct.destroy(h)
        return t1 - t0, time.perf_counter() - t1

    via_direct(-1)
    res: dict[str, list] = {"api": [], "direct": []}
    try:
        for i in range(n):
            order = [("api", lambda: _api_cycle(lab, app_d_id)), ("direct", lambda: via_direct(i))]
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                res[name].append(fn())
    finally:
        direct.api.close()
    return _summary(res, 1.10, 1.20)


GRACEFUL = {"terminationType": "GRACEFUL", "gracefulTerminationTimeout": 30}


def vms(lab: Lab, app_d_id: str, n: int = 3, warm: bool = True) -> dict:
    """Interleaved VM cycles: the API (GRACEFUL terminate: the ACPI button)
    against vim_overhead's direct path making the driver's libvirt calls
    for the request mecorch makes from the same AppD (decision.
    resource_request), on the lab's pool and network. Both must get an
    HTTP answer from the guest."""
    vim = lab.cfg["hosts"][0]["vim"]
    state_dir, run_dir = lab.host_dirs
    # the direct path's domains carry another host id: the lab's mecorch
    # reconciles its own host id and would remove them as orphans
    cfg = {**vim, "host_id": f"direct{lab.tag}", "state_dir": state_dir, "run_dir": run_dir}
    pkg = lab.pkg_doc(app_d_id)
    image = pkg["_image"]
    sha = vo.WORKLOADS.joinpath("sample-vm.qcow2.sha256").read_text().split()[0]
    base = X.base_volume_name(image, sha)
    conn = vo.libvirt.open(vo.URI)
    gateway = X.gateway(vim["network_cidr"])

    def request(iid: str):
        req = resource_request(iid, pkg["_appd"], DeploymentType.VM, image, {})
        # what mecorch's MEP adds: same keys, same lengths
        return dataclasses.replace(req, env={
            **req.env, "MEC_APP_INSTANCE_ID": iid, "MEC_APP_TOKEN": "t" * 43,
            "MEC_MP1_URL": f"http://{gateway}:{lab.serve.port}/mec_app_support/v1"})

    def reach(ip: str) -> None:
        vo.http_get(ip, time.monotonic() + 120)

    def via_direct(i: int) -> tuple[float, float, float]:
        return vo.via_libvirt(conn, cfg, base, request(f"mecb{lab.tag}d{i}"),
                              GRACEFUL["gracefulTerminationTimeout"])

    try:
        if warm:       # the base volume exists already (footprint's VM): warm-up only
            _api_cycle(lab, app_d_id, reach, GRACEFUL)
            via_direct(-1)
        res: dict[str, list] = {"api": [], "direct": []}
        for i in range(n):
            order = [("api", lambda: _api_cycle(lab, app_d_id, reach, GRACEFUL)),
                     ("direct", lambda: via_direct(i))]
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                res[name].append(fn())
                d, r, t = res[name][-1]
                print(f"  {name:6s} #{i}: deploy {d:5.2f} s, HTTP after {r:5.2f} s, "
                      f"terminate {t:5.2f} s", flush=True)
    finally:
        conn.close()
    return _summary(res, 1.05, 1.10)
