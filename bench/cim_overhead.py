"""Overhead of the Docker CIM over the docker-py calls it makes.

Deploys and deletes N instances (pause container + app container + one
volume + a published loopback port, on one bridge network) through
`DockerCIM.deploy`/`destroy`, and the same through the bare docker-py calls
(pull by digest, create volume, create+start pause, create+start app,
inspect; remove app, pause, volume), interleaved in one run and
alternating which goes first. Prints p50/p99 of each and the ratios.

The driver does more than the direct path on purpose (input validation,
the registry and catalog check of the image, a volume inspect so a
reserved volume is never taken over): that is the overhead measured.
Only loopback and the containers it starts are contacted.

usage: python bench/cim_overhead.py [--n 20] [--image REF] [--docker-host URL]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from drivers.docker_cim import DockerCIM                     # noqa: E402
from drivers.docker_cim.pause import PAUSE_IMAGE             # noqa: E402
from mecorch.driverapi.model import PortSpec, ResourceRequest, VolumeSpec  # noqa: E402
from mecorch.kernel.states import DeploymentType                    # noqa: E402
from support.lab import free_port                            # noqa: E402 - the one lab


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


class Direct:
    """What a hand-written script would do with docker-py for one instance."""

    def __init__(self, api: docker.APIClient, registry: str, repo: str, digest: str,
                 network: str, host_id: str):
        self.api, self.network, self.host_id = api, network, host_id
        self.repo, self.digest = f"{registry}/{repo}", digest

    def deploy(self, iid: str, port: int) -> dict:
        api = self.api
        labels = {"mecorch.instance": iid, "mecorch.host": self.host_id}
        for _ in api.pull(self.repo, tag=self.digest, stream=True, decode=True):
            pass
        vol = f"mecorch.{iid}.data"
        api.create_volume(vol, driver="local", labels={**labels, "mecorch.role": "volume"})
        pause = api.create_container(
            PAUSE_IMAGE, name=f"mecorch-{iid}-pause", ports=[(80, "tcp")],
            labels={**labels, "mecorch.role": "pause"},
            host_config=api.create_host_config(network_mode=self.network,
                                               port_bindings={"80/tcp": ("127.0.0.1", port)})
        )["Id"]
        api.start(pause)
        app = api.create_container(
            f"{self.repo}@{self.digest}", name=f"mecorch-{iid}-app",
            labels={**labels, "mecorch.role": "app"},
            host_config=api.create_host_config(
                network_mode=f"container:{pause}", nano_cpus=250_000_000,
                mem_limit=64 * 1024 * 1024, binds={vol: {"bind": "/data", "mode": "rw"}}))["Id"]
        api.start(app)
        api.inspect_container(pause)
        return {"app": app, "pause": pause, "volume": vol}

    def destroy(self, h: dict) -> None:
        self.api.remove_container(h["app"], force=True)
        self.api.remove_container(h["pause"], force=True)
        self.api.remove_volume(h["volume"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--image", default="127.0.0.1:5000/mecorch/sample-http:1.0")
    ap.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    args = ap.parse_args()

    uid = secrets.token_hex(4)
    registry = args.image.split("/", 1)[0]
    state = tempfile.TemporaryDirectory(prefix="cim-bench-")
    cfg = {"docker_host": args.docker_host, "registry": registry,
           "network": f"mecorch-bench-{uid}", "host_id": f"bench-{uid}",
           "state_dir": state.name, "run_dir": state.name}
    cim = DockerCIM(cfg)
    api = docker.APIClient(base_url=args.docker_host, version="auto")
    try:
        cim.set_image_available(args.image, True)
        digest = cim.check_image(args.image)["digest"]
        cim.open()          # pause image + network: one-time, not measured
        direct = Direct(api, registry, args.image.split("/", 1)[1].rsplit(":", 1)[0], digest,
                        cfg["network"], cfg["host_id"])

        def via_driver(i: int) -> tuple[float, float]:
            req = ResourceRequest(
                instance_id=f"drv-{uid}-{i}", app_d_id="bench", manner=DeploymentType.CONTAINER,
                image=args.image, vcpu=0.25, memory_mb=64,
                volumes=(VolumeSpec("data", mount_path="/data"),),
                ports=(PortSpec(80, host_port=free_port()),))
            t0 = time.perf_counter()
            alloc = cim.deploy(req)
            t1 = time.perf_counter()
            cim.destroy(alloc.handle)
            return t1 - t0, time.perf_counter() - t1

        def via_direct(i: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            h = direct.deploy(f"dir-{uid}-{i}", free_port())
            t1 = time.perf_counter()
            direct.destroy(h)
            return t1 - t0, time.perf_counter() - t1

        via_driver(-1), via_direct(-1)          # warm-up: caches, first pull
        res = {"driver": [], "direct": []}
        for i in range(args.n):
            order = [("driver", via_driver), ("direct", via_direct)]
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                res[name].append(fn(i))

        print(f"Docker CIM overhead: n={args.n}, image {args.image}@{digest[:19]}...")
        print(f"{'':8} {'deploy p50':>11} {'deploy p99':>11} {'delete p50':>11} "
              f"{'delete p99':>11} {'total p50':>10} {'total p99':>10}   (ms)")
        p50 = {}
        for name, rows in res.items():
            dep, dele = [r[0] * 1e3 for r in rows], [r[1] * 1e3 for r in rows]
            tot = [a + b for a, b in zip(dep, dele)]
            p50[name] = (statistics.median(dep), statistics.median(dele), statistics.median(tot))
            print(f"{name:8} {p50[name][0]:11.1f} {pct(dep, 99):11.1f} {p50[name][1]:11.1f} "
                  f"{pct(dele, 99):11.1f} {p50[name][2]:10.1f} {pct(tot, 99):10.1f}")
        ratio = [a / b for a, b in zip(p50["driver"], p50["direct"])]
        print(f"ratio p50 driver/direct: deploy {ratio[0]:.3f}x  delete {ratio[1]:.3f}x  "
              f"total {ratio[2]:.3f}x  (target <= 1.10x: {'met' if ratio[2] <= 1.10 else 'MISSED'})")
        return 0
    finally:
        # Remove whatever the run made, even after a failure.
        flt = {"label": [f"mecorch.host={cfg['host_id']}"]}
        for c in api.containers(all=True, filters=flt):
            api.remove_container(c["Id"], force=True)
        for v in api.volumes(filters=flt).get("Volumes") or []:
            api.remove_volume(v["Name"])
        for n in api.networks(names=[cfg["network"]]):
            if n["Name"] == cfg["network"]:
                api.remove_network(n["Id"])
        cim.close()
        api.close()
        state.cleanup()


if __name__ == "__main__":
    sys.exit(main())
