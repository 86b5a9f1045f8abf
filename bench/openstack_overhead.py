#!/usr/bin/env python3
"""Overhead of the OpenStack VIM driver over the same openstacksdk calls
made directly.

Deploys and terminates N servers of the sample VM image through
`OpenStackVIM` and through the openstacksdk calls the driver makes, call
for call (`direct_deploy` / `direct_terminate`: the image check in Glance,
the same flavor (created, then removed when unused), a port on the same
network, the same server with its metadata and block device mapping,
openstacksdk's `wait_for_server`, the port read; then the ACPI stop waited
for SHUTOFF, the delete waited for, the port delete and the unused-flavor
scan), interleaved in the same run, on the all-in-one test cloud
(tests/openstack/cloud.sh) under a host id of its own that it cleans up.
Prints deploy, terminate and the deploy+terminate ratio at p50 (target
<= 1.05x).

    /opt/mecorch/venv/bin/python bench/openstack_overhead.py [--n 3]

It talks only to the test cloud's APIs on loopback.
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openstack
from openstack import config as occ

from drivers.openstack_vim import OpenStackVIM
from drivers.openstack_vim import flavors as F
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType

WORKLOADS = Path("/var/cache/mecorch/workloads")
CLOUDS_YAML = "/etc/mecorch/openstack-clouds.yaml"
CLOUD, NETWORK = "mecorch-test", "mecorch-net"
MEMORY_MB = 256                 # the sample VM AppD's
STOP_S = 30


def connect():
    region = occ.OpenStackConfig(config_files=[CLOUDS_YAML], load_envvars=False).get_one(
        cloud=CLOUD)
    return openstack.connection.Connection(config=region)


def direct_deploy(conn, name: str, image_name: str, host: str, net_id: str) -> dict:
    """What the driver does for one deploy, with openstacksdk alone."""
    img = [i for i in conn.image.images(name=image_name)][0]
    assert img.status == "active"
    flavor_name = f"bench.1c{MEMORY_MB}m1g0e"
    flavors = [f for f in conn.compute.flavors(details=True, is_public=None)
               if (f.vcpus, f.ram, f.disk, f.ephemeral or 0) == (1, MEMORY_MB, 1, 0)]
    flavor = flavors[0] if flavors else conn.compute.create_flavor(
        name=flavor_name, vcpus=1, ram=MEMORY_MB, disk=1, ephemeral=0, is_public=True)
    if not flavors:
        conn.compute.create_flavor_extra_specs(flavor, {F.OWNER_SPEC: host})
    if list(conn.compute.servers(name=f"^{name}$")) or list(conn.network.ports(name=name)):
        raise RuntimeError("name taken")
    port = conn.network.create_port(network_id=net_id, name=name,
                                    description=f"bench host={host} instance={name}")
    server = conn.compute.create_server(
        name=name, image_id=img.id, flavor_id=flavor.id, networks=[{"port": port.id}],
        metadata={"mecorch_instance": name, "mecorch_host": host, "mecorch_app": "bench"},
        block_device_mapping=[{"boot_index": 0, "uuid": img.id, "source_type": "image",
                               "destination_type": "local", "delete_on_termination": True}])
    conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=2,
                                 wait=600)
    port = conn.network.get_port(port.id)
    return {"server": server, "port": port, "flavor": flavor}


def direct_terminate(conn, h: dict, host: str) -> None:
    srv = conn.compute.get_server(h["server"].id)
    conn.compute.stop_server(srv)
    conn.compute.wait_for_server(srv, status="SHUTOFF", failures=["ERROR"], interval=1,
                                 wait=STOP_S + 90)
    conn.compute.delete_server(srv)
    conn.compute.wait_for_delete(srv, interval=1, wait=180)
    conn.network.delete_port(h["port"], ignore_missing=True)
    used = {(s.flavor or {}).get("original_name") for s in conn.compute.servers(details=True)}
    for f in conn.compute.flavors(details=True, is_public=None):
        if f.name.startswith("bench.") and f.name not in used:
            if (conn.compute.fetch_flavor_extra_specs(f).extra_specs or {}).get(
                    F.OWNER_SPEC) == host:
                conn.compute.delete_flavor(f)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3)
    args = ap.parse_args()
    tag = secrets.token_hex(3)
    host = f"bench-{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="mecorch-osbench-"))
    drv = OpenStackVIM({"driver": "openstack", "cloud": CLOUD, "clouds_yaml": CLOUDS_YAML,
                        "network": NETWORK, "host_id": host, "state_dir": str(tmp),
                        "boot_timeout_s": 600})
    conn = connect()
    sha = (WORKLOADS / "sample-vm.qcow2.sha256").read_text().split()[0]
    drv.import_image("sample", str(WORKLOADS / "sample-vm.qcow2"), sha)
    image_name = f"mecorch.{host}.sample"
    net_id = conn.network.find_network(NETWORK).id
    times = {"mecorch": {"deploy": [], "terminate": []}, "direct": {"deploy": [], "terminate": []}}
    try:
        for i in range(args.n):
            for path in (("mecorch", "direct") if i % 2 == 0 else ("direct", "mecorch")):
                name = f"b{tag}-{i}-{path[0]}"
                t0 = time.perf_counter()
                if path == "mecorch":
                    alloc = drv.deploy(ResourceRequest(name, "bench", DeploymentType.VM,
                                                       "sample", memory_mb=MEMORY_MB))
                    t1 = time.perf_counter()
                    drv.stop(alloc.handle, STOP_S)
                    drv.destroy(alloc.handle)
                else:
                    h = direct_deploy(conn, f"mecorch-{name}", image_name, host, net_id)
                    t1 = time.perf_counter()
                    direct_terminate(conn, h, host)
                t2 = time.perf_counter()
                times[path]["deploy"].append(t1 - t0)
                times[path]["terminate"].append(t2 - t1)
                print(f"round {i} {path:8s} deploy {t1 - t0:6.1f} s  terminate {t2 - t1:6.1f} s",
                      flush=True)
    finally:
        for obs in drv.list_instances():
            drv.destroy(obs.handle)
        drv.remove_image("sample")
        drv.close()
        conn.close()
    for path, t in times.items():
        total = [d + e for d, e in zip(t["deploy"], t["terminate"])]
        print(f"{path:8s} deploy p50 {statistics.median(t['deploy']):6.1f} s  terminate p50 "
              f"{statistics.median(t['terminate']):6.1f} s  deploy+terminate p50 "
              f"{statistics.median(total):6.1f} s  max {max(total):6.1f} s")
    m = statistics.median([d + e for d, e in zip(times["mecorch"]["deploy"],
                                                 times["mecorch"]["terminate"])])
    d = statistics.median([d + e for d, e in zip(times["direct"]["deploy"],
                                                 times["direct"]["terminate"])])
    print(f"ratio mecorch/direct deploy+terminate p50: {m / d:.3f}x (target <= 1.05x)")
    return 0 if m / d <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
