#!/usr/bin/env python3
"""A STAND-IN for many MEPMs, for bench/meo_scale.py: not an MEPM.

One process (asyncio, one thread) answers the Mm3 calls the MEO's
RemoteMepm makes (mecorch/mepm/remote.py) for N edge hosts, each on a
loopback port of its own (RemoteMepm addresses an MEPM as
http://HOST:PORT, no path prefix). It answers the same JSON shapes as the
real MEPM routes (mecorch/api/routes.py, mecorch/mepm/routes.py,
mecorch/api/status.py's /readyz), copied from a real MEPM's answers, but
does no work: no backend, no package check, no store; an op occurrence
is COMPLETED by the time it is first read; a subscription is accepted
(201) and no notification is ever sent (the op has ended at the MEO's
first read, so it waits for none). What is measured with it is the
MEO's cost, not an MEPM's.

Calls served, per host (every call RemoteMepm makes):
  GET  /mecorch/v1/hosts, /mecorch/v1/hosts/{hostId}     host info, capacity
  POST /mecorch/v1/hosts/{hostId}/unfence
  GET  /readyz                                            backends (health)
  GET  /app_pkgm/v1/app_packages[?filter=(eq,appDId,X)], POST, GET/PATCH/DELETE {id},
       PUT {id}/package_content
  GET  /app_lcm/v1/app_instances, POST, GET/DELETE {id}, POST {id}/instantiate,
       POST {id}/terminate, POST {id}/operate
  GET  /app_lcm/v1/app_lcm_op_occs/{id}, ?filter=(eq,appInstanceId,X)
  POST /app_lcm/v1/subscriptions

Its hosts' instances survive a restart (written to --state on SIGTERM,
read at start), as a real MEPM's do: the MEO's resync after a reconnect
storm finds them as it left them.

    python bench/standin.py --hosts 1000 --ports-file PORTS --state STATE.json
(writes "control PORT" then "hostId port" lines to PORTS once every port
listens; the control port answers GET /standin/stats, for the benchmark)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import urllib.parse
import uuid

LCM, PKGM, HOSTS = "/app_lcm/v1", "/app_pkgm/v1", "/mecorch/v1/hosts"
VCPU, MEMORY_MB, DISK_GB = 64.0, 65536, 1000.0      # each host's room (CONTAINER)
USAGE = False       # --usage: report figures (Host.usage)
ADMITS = {"reservedVolumes": True, "publishedPorts": False, "vcpuMin": None,
          "vcpuMax": None, "memoryMbMin": None, "memoryMbMax": None, "diskGbMax": None,
          "volumeGbMax": None, "volumesMax": None, "portProtocols": None}


# What the benchmark asks the stand-in's control port (not an MEPM call):
# the hosts whose instances the MEO listed, and that it subscribed on,
# since this start.
STATS: dict[str, set] = {"listed": set(), "subscribed": set()}


def _now() -> dict:
    t = time.time()
    return {"seconds": int(t), "nanoSeconds": int((t % 1) * 1e9)}


class Host:
    def __init__(self, host_id: str, port: int, state: dict | None = None):
        self.host_id, self.port = host_id, port
        state = state or {}
        self.instances: dict[str, dict] = state.get("instances", {})
        self.packages: dict[str, dict] = state.get("packages", {})
        self.app_d_ids: dict[str, str] = {}         # package -> appDId (its appPkgName)
        self.ops: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.vcpu_used = sum(i["allocatedResources"]["compute"]["vcpu"]
                             for i in self.instances.values() if "allocatedResources" in i)
        self.mem_used = sum(i["allocatedResources"]["compute"]["memoryMb"]
                            for i in self.instances.values() if "allocatedResources" in i)

    def state(self) -> dict:
        return {"instances": self.instances, "packages": self.packages}

    # ------------------------------------------------------------ host
    def info(self) -> dict:
        out = {"hostId": self.host_id, "latencyMs": None, "mp1Url": None,
               "serviceCidr": "10.90.0.0/24",
               "capacity": {"CONTAINER": {
                   "vcpuTotal": VCPU, "vcpuUsed": self.vcpu_used, "memoryMbTotal": MEMORY_MB,
                   "memoryMbUsed": self.mem_used, "diskGbTotal": DISK_GB, "diskGbUsed": 0.0,
                   "accel": "", "admits": dict(ADMITS)}}}
        if USAGE:
            out["resourceUsage"] = self.usage()
        return out

    def usage(self) -> dict:
        """--usage: the host's sum and each INSTANTIATED instance's reading
        (mecorch.mepm.usage's shape), new at every call: the worst case for
        the MEO (a real host's change every usage round, not every beat)."""
        t = time.time()
        stamp = {"seconds": int(t), "nanoSeconds": int((t % 1) * 1e9)}
        each = {iid: {"time": stamp, "cpuPercent": 1.5, "cpuSeconds": round(t % 1000, 3),
                      "memoryBytes": 40 << 20, "memoryLimitBytes": 64 << 20,
                      "networkRxBytes": int(t), "networkTxBytes": int(t),
                      "blockReadBytes": 4096, "blockWriteBytes": 1 << 20}
                for iid, i in self.instances.items()
                if i.get("instantiationState") == "INSTANTIATED"}
        total = {k: sum(v[k] for v in each.values()) if each else None
                 for k in ("cpuPercent", "memoryBytes", "networkRxBytes", "networkTxBytes",
                           "blockReadBytes", "blockWriteBytes")}
        return {**total, "instances": len(each), "unavailable": 0,
                "time": stamp if each else None, "byInstance": each}

    def readyz(self) -> dict:
        return {"status": "ready", "checks": [
            {"name": "store", "ok": True, "detail": "stand-in: no store"},
            {"name": f"{self.host_id}/cim", "ok": True, "detail": "stand-in",
             "driver": "docker"},
            {"name": f"{self.host_id}/mep", "ok": True, "detail": "ok", "driver": "linux"}]}

    # ------------------------------------------------------------ packages
    def new_package(self, body: dict, meo_id: str | None) -> dict:
        pid = meo_id or str(uuid.uuid4())
        pkg = {"id": pid, "appPkgName": body.get("appPkgName"),
               "appPkgVersion": body.get("appPkgVersion"), "checksum": body.get("checksum"),
               "onboardingState": "CREATED", "operationalState": "DISABLED",
               "usageState": "NOT_IN_USE", "userDefinedData": body.get("userDefinedData"),
               "_links": {"self": {"href": f"{PKGM}/app_packages/{pid}"}}}
        self.packages[pid] = pkg
        self.app_d_ids[pid] = body.get("appPkgName")
        return pkg

    def onboarded(self, pid: str) -> None:
        """What the real MEPM reads from the package's AppD; the stand-in
        reads no AppD: the benchmark names its packages by their appDId."""
        app = self.app_d_ids.get(pid, "bench-scale")
        self.packages[pid].update(
            onboardingState="ONBOARDED", operationalState="ENABLED", appDId=app,
            appDVersion="1.0", appSoftwareVersion="1.0", appProvider="mecorch",
            appName=app, deploymentTypes=["CONTAINER"], dnsNames=[],
            deploymentType="CONTAINER", deletionPending=False)

    # ------------------------------------------------------------ instances
    def new_instance(self, body: dict, meo_id: str | None) -> dict:
        iid = meo_id or str(uuid.uuid4())
        if iid in self.instances:                   # the same create again (idempotent)
            return self.instances[iid]
        base = f"{LCM}/app_instances/{iid}"
        inst = {"id": iid, "appInstanceName": body.get("appInstanceName"),
                "appInstanceDescription": body.get("appInstanceDescription"),
                "appDId": body.get("appDId"), "appProvider": "mecorch",
                "appName": "bench-scale", "appSoftVersion": "1.0", "appDVersion": "1.0",
                "appPkgId": body.get("appPkgId"), "instantiationState": "NOT_INSTANTIATED",
                "_links": {"self": {"href": base}, "instantiate": {"href": f"{base}/instantiate"},
                           "terminate": {"href": f"{base}/terminate"},
                           "operate": {"href": f"{base}/operate"}}}
        self.instances[iid] = inst
        return inst

    def op(self, iid: str, operation: str) -> dict:
        """An op occurrence, answered STARTING and already COMPLETED for
        the next read (the stand-in does no work)."""
        oid = str(uuid.uuid4())
        t = _now()
        op = {"id": oid, "operationState": "STARTING", "stateEnteredTime": t, "startTime": t,
              "lcmOperation": "INSTATIATE" if operation == "INSTANTIATE" else operation,
              "operationParams": operation, "appInstanceId": iid,
              "_links": {"self": {"href": f"{LCM}/app_lcm_op_occs/{oid}"},
                         "appInstance": {"href": f"{LCM}/app_instances/{iid}"}}}
        self.ops[oid] = {**op, "operationState": "COMPLETED", "stateEnteredTime": _now()}
        if len(self.ops) > 200:                     # an MEPM keeps its ops; this one needs few
            self.ops.pop(next(iter(self.ops)))
        return op

    def instantiate(self, iid: str, body: dict) -> dict:
        inst = self.instances[iid]
        vcpu, mem = 0.5, 64
        inst.update(instantiationState="INSTANTIATED",
                    instantiatedAppState={"operationalState": "STARTED"},
                    hostId=self.host_id, deploymentType=body.get("deploymentType", "CONTAINER"),
                    allocatedResources={"hostId": self.host_id,
                                        "compute": {"vcpu": vcpu, "memoryMb": mem},
                                        "storage": [], "network": [], "serviceAddresses": [],
                                        "serviceAddress": None},
                    observedState="RUNNING", observedStateDetail="started by instantiate",
                    observedStateTime=_now(),
                    restartPolicy={"policy": "Never", "backoffInitialS": 1.0,
                                   "backoffMaxS": 60.0, "limit": 10, "resetAfterS": 300.0},
                    restartCount=0)
        self.vcpu_used += vcpu
        self.mem_used += mem
        return self.op(iid, "INSTANTIATE")

    def terminate(self, iid: str) -> dict:
        inst = self.instances[iid]
        if "allocatedResources" in inst:
            self.vcpu_used -= inst["allocatedResources"]["compute"]["vcpu"]
            self.mem_used -= inst["allocatedResources"]["compute"]["memoryMb"]
        for k in ("instantiatedAppState", "hostId", "deploymentType", "allocatedResources",
                  "observedState", "observedStateDetail", "observedStateTime",
                  "restartPolicy", "restartCount"):
            inst.pop(k, None)
        inst["instantiationState"] = "NOT_INSTANTIATED"
        return self.op(iid, "TERMINATE")


def _problem(status: int, title: str, detail: str) -> tuple[int, dict]:
    return status, {"type": "about:blank", "title": title, "status": status, "detail": detail}


def _eq_filter(query: dict, field: str) -> str | None:
    f = (query.get("filter") or [""])[0]
    prefix = f"(eq,{field},"
    return f[len(prefix):-1] if f.startswith(prefix) and f.endswith(")") else None


def route(h: Host, method: str, target: str, headers: dict, body: bytes) -> tuple[int, object]:
    """(status, JSON document or None) of one call to host `h`."""
    parts = urllib.parse.urlsplit(target)
    path, query = parts.path.rstrip("/"), urllib.parse.parse_qs(parts.query)
    seg = path.split("/")[1:]
    doc = json.loads(body) if body and headers.get("content-type") == "application/json" \
        else None
    meo_id = headers.get("x-mecorch-meo-id")
    if path == HOSTS and method == "GET":
        return 200, [h.info()]
    if path.startswith(HOSTS + "/"):
        if seg[3] != h.host_id:
            return _problem(404, "Not Found", f"unknown edge host {seg[3]!r}")
        if len(seg) == 4 and method == "GET":
            return 200, h.info()
        if len(seg) == 5 and seg[4] == "unfence" and method == "POST":
            return 200, {"unfenced": [], "notFenced": list(doc.get("appInstanceIds", []))}
    if path == "/readyz":
        return 200, h.readyz()
    if path == f"{PKGM}/app_packages":
        if method == "GET":
            want = _eq_filter(query, "appDId")
            return 200, [p for p in h.packages.values()
                         if want is None or p.get("appDId") == want]
        if method == "POST":
            return 201, h.new_package(doc, meo_id)
    if path.startswith(f"{PKGM}/app_packages/"):
        pkg = h.packages.get(seg[3])
        if pkg is None:
            return _problem(404, "Not Found", f"no app package {seg[3]}")
        if len(seg) == 5 and seg[4] == "package_content" and method == "PUT":
            h.onboarded(pkg["id"])
            return 202, None
        if method == "GET":
            return 200, pkg
        if method == "PATCH":
            pkg["operationalState"] = doc.get("operationState", pkg["operationalState"])
            return 200, {"operationState": pkg["operationalState"]}
        if method == "DELETE":
            del h.packages[pkg["id"]]
            return 204, None
    if path == f"{LCM}/app_instances":
        if method == "GET":
            STATS["listed"].add(h.host_id)          # the MEO's resync reads this
            return 200, list(h.instances.values())
        if method == "POST":
            return 201, h.new_instance(doc, meo_id)
    if path.startswith(f"{LCM}/app_instances/"):
        iid = seg[3]
        if iid not in h.instances:
            return _problem(404, "Not Found", f"no app instance {iid}")
        if len(seg) == 4 and method == "GET":
            return 200, h.instances[iid]
        if len(seg) == 4 and method == "DELETE":
            del h.instances[iid]
            return 204, None
        if len(seg) == 5 and method == "POST":
            state = h.instances[iid]["instantiationState"]
            if seg[4] == "instantiate":
                if state == "INSTANTIATED":
                    return _problem(409, "Conflict", f"app instance {iid} is INSTANTIATED")
                return 202, h.instantiate(iid, doc or {})
            if seg[4] == "terminate":
                if state != "INSTANTIATED":
                    return _problem(409, "Conflict", f"app instance {iid} is NOT_INSTANTIATED")
                return 202, h.terminate(iid)
            if seg[4] == "operate":
                return 202, h.op(iid, "OPERATE")
    if path == f"{LCM}/app_lcm_op_occs" and method == "GET":
        want = _eq_filter(query, "appInstanceId")
        return 200, [o for o in h.ops.values() if want is None or o["appInstanceId"] == want]
    if path.startswith(f"{LCM}/app_lcm_op_occs/") and method == "GET":
        op = h.ops.get(seg[3])
        return (200, op) if op else _problem(404, "Not Found", f"no op occurrence {seg[3]}")
    if path == f"{LCM}/subscriptions" and method == "POST":
        STATS["subscribed"].add(h.host_id)
        sid = str(uuid.uuid4())
        sub = {**doc, "id": sid, "_links": {"self": {"href": f"{LCM}/subscriptions/{sid}"}}}
        sub.pop("authentication", None)
        h.subscriptions[sid] = sub
        return 201, sub
    return _problem(404 if method == "GET" else 405, "Not Found",
                    f"the stand-in does not serve {method} {path}")


async def serve_conn(h: Host, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length") or 0)
            body = await reader.readexactly(n) if n else b""
            try:
                status, doc = route(h, method, target, headers, body)
            except Exception as e:          # noqa: BLE001 - the stand-in answers 500, as an MEPM would
                status, doc = _problem(500, "Internal Server Error", f"stand-in: {e!r}")
            payload = b"" if doc is None else json.dumps(doc).encode()
            ctype = "application/problem+json" if status >= 400 else "application/json"
            out = (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
            writer.write(out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /standin/stats: {listed, subscribed} counts (one request a connection)."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        payload = json.dumps({k: len(v) for k, v in STATS.items()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(payload)).encode()
                     + b"\r\n\r\n" + payload)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(a) -> None:
    try:
        with open(a.state) as f:
            saved = json.load(f)
    except (FileNotFoundError, ValueError):
        saved = {"ports": {}, "hosts": {}}
    hosts, servers = [], []
    for i in range(a.hosts):
        hid = f"{a.prefix}{i:04d}"
        port = saved["ports"].get(hid, 0)
        h = Host(hid, port, saved["hosts"].get(hid))
        srv = await asyncio.start_server(lambda r, w, h=h: serve_conn(h, r, w), "127.0.0.1",
                                         port, reuse_address=True, backlog=128)
        h.port = srv.sockets[0].getsockname()[1]
        hosts.append(h)
        servers.append(srv)
    control = await asyncio.start_server(serve_control, "127.0.0.1", 0)
    with open(a.ports_file + ".tmp", "w") as f:
        f.write(f"control {control.sockets[0].getsockname()[1]}\n")
        f.write("".join(f"{h.host_id} {h.port}\n" for h in hosts))
    os.replace(a.ports_file + ".tmp", a.ports_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for srv in servers:
        srv.close()
    with open(a.state, "w") as f:
        json.dump({"ports": {h.host_id: h.port for h in hosts},
                   "hosts": {h.host_id: h.state() for h in hosts}}, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--prefix", default="edge")
    ap.add_argument("--ports-file", required=True)
    ap.add_argument("--state", required=True, help="its hosts' instances across a restart")
    ap.add_argument("--usage", action="store_true",
                    help="report each instance's figures with the host info, new every call")
    a = ap.parse_args()
    global USAGE
    USAGE = a.usage
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
