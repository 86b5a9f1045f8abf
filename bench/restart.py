#!/usr/bin/env python3
"""Kill to serving again: an app container's process killed (SIGKILL from
the host, as the kernel's OOM killer or a crash ends it) until its HTTP
server answers again, under mecorch's supervisor (restart
policy Always, told by Docker's events) against Docker's own restart
policy (`--restart=always`), measured in the same run, interleaved.

Both sides do the same work:
- the same shape: a pause container owning the network namespace and the
  app container (same image, command, CPU and memory limits) joined to it,
  on the lab's docker network; only the app container is killed and
  started again (so neither side makes a namespace or a veth again);
- the same wait: Docker's restart manager waits 100 ms before a restart,
  doubling while the container ran less than 10 s; mecorch's policy is
  given the same (backoffInitialS 0.1, backoffMaxS 60, resetAfterS 10), and
  each side has run more than 10 s before each kill, so each waits 100 ms;
- the same check: after the kill, GET / of the app's address (0.2 s
  timeout) every 10 ms until it fails, then until it answers 200.

Not `docker kill`: Docker marks a container it was told to kill as
stopped by hand and its restart policy leaves it stopped (dockerd 20.10
here: `docker kill` of a `--restart=always` container stays exited, a
SIGKILL of its process restarts it). mecorch's supervisor restarts both.

    /opt/mecorch/venv/bin/python bench/restart.py [--n 10]

`measure(lab, app_d_id, n)` is also bench/run.py's part (on its lab).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import INST, NO_RULES, Lab, pct          # noqa: E402

# Docker's restart manager (moby restartmanager): 100 ms, doubled, 1 min
# cap, reset after a run of 10 s
POLICY = {"policy": "Always", "backoffInitialS": 0.1, "backoffMaxS": 60, "limit": 1000,
          "resetAfterS": 10}
RUN_BEFORE_KILL_S = 10.5
APP_D_ID = "bench-http-restart"


def _answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=0.2) as r:
            return r.status == 200
    except OSError:
        return False


def kill_to_serving(dk, container: str, ip: str, timeout_s: float = 30) -> float:
    """Seconds from the kill until the app answers again (after it was
    seen down: an answer before is not the restarted app's)."""
    pid = dk.inspect_container(container)["State"]["Pid"]
    assert pid > 0, f"{container[:12]} is not running"
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while _answers(ip):
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{container[:12]} still answers after its kill")
        time.sleep(0.01)
    while not _answers(ip):
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{container[:12]} not serving {timeout_s} s after its kill")
        time.sleep(0.01)
    return time.perf_counter() - t0


class DockerSide:
    """The same pause + app pair as the mecorch instance `iid`, made with
    docker-py, the app with Docker's `--restart=always`."""

    def __init__(self, dk, iid: str, network: str, tag: str):
        self.dk = dk
        pause = dk.inspect_container(dk.containers(
            all=True, filters={"label": [f"mecorch.instance={iid}", "mecorch.role=pause"]}
        )[0]["Id"])
        app = dk.inspect_container(dk.containers(
            all=True, filters={"label": [f"mecorch.instance={iid}", "mecorch.role=app"]}
        )[0]["Id"])
        self.made: list[str] = []
        hc = dk.create_host_config(network_mode=network)
        self.pause = dk.create_container(pause["Config"]["Image"], name=f"bench-rs-p-{tag}",
                                         host_config=hc, labels={"bench": tag})["Id"]
        self.made.append(self.pause)
        dk.start(self.pause)
        hc = dk.create_host_config(network_mode=f"container:{self.pause}",
                                   restart_policy={"Name": "always"},
                                   nano_cpus=app["HostConfig"].get("NanoCpus") or None,
                                   mem_limit=app["HostConfig"].get("Memory") or None)
        self.app = dk.create_container(app["Config"]["Image"], name=f"bench-rs-a-{tag}",
                                       command=app["Config"].get("Cmd"),
                                       entrypoint=app["Config"].get("Entrypoint"),
                                       host_config=hc, labels={"bench": tag})["Id"]
        self.made.append(self.app)
        dk.start(self.app)
        self.ip = dk.inspect_container(self.pause)["NetworkSettings"]["Networks"][network][
            "IPAddress"]

    def close(self) -> None:
        for ref in reversed(self.made):
            try:
                self.dk.remove_container(ref, force=True)
            except docker.errors.NotFound:
                pass


def measure(lab: Lab, app_d_id: str, n: int) -> dict:
    """n kills per side, interleaved (mecorch, Docker, mecorch, ...)."""
    host = lab.cfg["hosts"][0]["cim"]
    dk = docker.APIClient(base_url=host["docker_host"], version="auto")
    iid, op = lab.api.deploy(app_d_id, restartPolicy=POLICY, **NO_RULES)
    assert op["operationState"] == "COMPLETED", op.get("error")
    side = None
    try:
        ip = lab.api.get(f"{INST}/{iid}")["allocatedResources"]["network"][0]["ip"]
        app = dk.containers(filters={"label": [f"mecorch.instance={iid}",
                                               "mecorch.role=app"]})[0]["Id"]
        side = DockerSide(dk, iid, host["network"], lab.tag)
        for where in (ip, side.ip):
            t0 = time.perf_counter()
            while not _answers(where):
                assert time.perf_counter() - t0 < 30, f"{where} never answered"
                time.sleep(0.05)
        mec, direct = [], []
        started = time.monotonic()
        for i in range(n):
            # each has run over 10 s: both restart after 100 ms
            time.sleep(max(0.0, started + RUN_BEFORE_KILL_S - time.monotonic()))
            started = time.monotonic()
            pair = [("mecorch", app, ip, mec), ("docker", side.app, side.ip, direct)]
            for name, ref, where, out in (pair if i % 2 == 0 else pair[::-1]):
                out.append(kill_to_serving(dk, ref, where))
            print(f"  restart {i + 1}/{n}: mecorch {mec[-1] * 1000:.0f} ms, "
                  f"docker {direct[-1] * 1000:.0f} ms", flush=True)
        info = lab.api.get(f"{INST}/{iid}")
        assert info["restartCount"] == n, info
    finally:
        if side is not None:
            side.close()
        lab.api.terminate(iid)
        lab.api.delete(iid)
        dk.close()
    out = {"n": n, "policy": POLICY,
           "mecorch_ms": [round(x * 1000, 1) for x in mec],
           "docker_ms": [round(x * 1000, 1) for x in direct]}
    for p in (50, 99):
        a, b = pct(mec, p), pct(direct, p)
        out[f"mecorch_p{p}_ms"], out[f"docker_p{p}_ms"] = round(a * 1000, 1), round(b * 1000, 1)
        out[f"ratio_p{p}"] = round(a / b, 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="kills per side")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    lab = Lab()
    try:
        lab.start()
        lab.onboard("sample-container-app", APP_D_ID)
        lab.notify_ops()
        r = measure(lab, APP_D_ID, args.n)
    finally:
        left = lab.close()
    print(f"kill -> serving again, {r['n']} per side, interleaved:")
    for p in (50, 99):
        print(f"  p{p}: mecorch {r[f'mecorch_p{p}_ms']} ms, docker --restart=always "
              f"{r[f'docker_p{p}_ms']} ms, ratio {r[f'ratio_p{p}']}x")
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    if left:
        print(f"left behind: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
