"""CLI actions over the REST API (`mecorch package ...`, `mecorch app ...`)."""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

from .client import Client, print_json
from .errors import InvalidInput
from .fileutil import sha256_file
from .yamlsafe import load_yaml

PKGM = "/app_pkgm/v1/app_packages"
INST = "/app_lcm/v1/app_instances"


def _q(filter_expr: str | None) -> str:
    return f"?filter={urllib.parse.quote(filter_expr)}" if filter_expr else ""


# ---------------------------------------------------------------- packages
def package_onboard(c: Client, a) -> int:
    path = Path(a.zip).resolve()
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    print(f"onboarding {path} ...", file=sys.stderr, flush=True)
    body = {"appPkgName": a.name or path.stem, "appPkgVersion": a.pkg_version,
            "checksum": {"algorithm": "SHA-256", "hash": sha256_file(path)}}
    if getattr(a, "upload", False):
        info = c.upload_package(body, path)
    else:
        info, _ = c.post(PKGM, {**body, "appPkgPath": str(path)})
    print_json(info)
    return 0


def package_list(c: Client, a) -> int:
    rows = c.get_all(PKGM + _q(a.filter))
    fmt = "{:<36}  {:<20}  {:<9}  {:<10}  {:<8}  {}"
    print(fmt.format("ID", "APPDID", "MANNER", "STATE", "USAGE", "NAME"))
    for p in rows:
        print(fmt.format(p["id"], p["appDId"], p.get("deploymentType", "?"),
                         p["operationalState"], p["usageState"], p["appName"]))
    return 0


def package_show(c: Client, a) -> int:
    print_json(c.get(f"{PKGM}/{a.id}"))
    return 0


def _patch(c: Client, pkg_id: str, state: str) -> int:
    print_json(c.call("PATCH", f"{PKGM}/{pkg_id}", {"operationState": state})[1])
    return 0


def package_enable(c: Client, a) -> int:
    return _patch(c, a.id, "ENABLED")


def package_disable(c: Client, a) -> int:
    return _patch(c, a.id, "DISABLED")


def package_delete(c: Client, a) -> int:
    status = c.call("DELETE", f"{PKGM}/{a.id}")[0]
    print("deleted" if status == 204 else "deletion pending: instances still use it")
    return 0


# ---------------------------------------------------------------- instances
def app_create(c: Client, a) -> int:
    body = {"appDId": a.app_d_id}
    if a.name:
        body["appInstanceName"] = a.name
    print_json(c.post(INST, body)[0])
    return 0


def app_instantiate(c: Client, a) -> int:
    body: dict = {"selectedMECHostInfo": [{"hostId": {"id": a.host}}]}
    if a.type:
        body["deploymentType"] = a.type
    if a.orchestration:
        text = Path(a.orchestration).read_text(encoding="utf-8")
        load_yaml(text, what=a.orchestration)          # fail early on bad YAML
        body["orchestrationInfo"] = text
    op, _ = c.post(f"{INST}/{a.id}/instantiate", body)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"instantiate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    print_json(c.get(f"{INST}/{a.id}"))
    return 0


def app_terminate(c: Client, a) -> int:
    body = {"terminationType": "FORCEFUL" if a.forceful else "GRACEFUL"}
    if not a.forceful:
        body["gracefulTerminationTimeout"] = a.timeout
    op, _ = c.post(f"{INST}/{a.id}/terminate", body)
    op = c.wait_op(op, out=sys.stderr)
    if op["operationState"] != "COMPLETED":
        print(f"terminate failed: {op.get('error', {}).get('detail')}", file=sys.stderr)
        return 1
    return 0


def app_list(c: Client, a) -> int:
    rows = c.get(INST + _q(a.filter))
    fmt = "{:<36}  {:<20}  {:<16}  {:<9}  {}"
    print(fmt.format("ID", "APPDID", "STATE", "MANNER", "ADDRESSES"))
    for i in rows:
        addrs = ",".join(n["ip"] for n in i.get("allocatedResources", {}).get("network", []))
        print(fmt.format(i["id"], i["appDId"], i["instantiationState"],
                         i.get("deploymentType", "-"), addrs or "-"))
    return 0


def app_show(c: Client, a) -> int:
    print_json(c.get(f"{INST}/{a.id}"))
    return 0


def app_delete(c: Client, a) -> int:
    c.call("DELETE", f"{INST}/{a.id}")
    print("deleted")
    return 0
