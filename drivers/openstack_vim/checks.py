"""`mecorch doctor` checks of the OpenStack VIM, done for real against the
cloud: authentication, the catalog, Glance, Nova, Neutron (the configured
network) and the quota headroom. Never raises."""

from __future__ import annotations

from mecorch.kernel.errors import MecorchError
from mecorch.driverapi.model import Check

from .errors import os_errors

FIX_CONFIG = "fix the vim section (cloud/clouds_yaml or auth, region)"
NEEDED = (("compute", "Nova"), ("image", "Glance"), ("network", "Neutron"))
OPTIONAL = (("placement", "Placement (capacity)"), ("block-storage", "Cinder (volumes)"))


def run_checks(drv) -> list[Check]:
    try:
        s = drv.settings
    except MecorchError as e:
        return [Check("vim.config", False, e.detail, "fix the vim section of the config")]
    checks: list[Check] = []
    try:
        conn = drv._connect()
        with os_errors("authenticate"):
            conn.authorize()        # a token, never shown
            project = conn.current_project_id
        checks.append(Check("vim.auth", True, f"{s.describe()}: authenticated, project {project}"))
    except MecorchError as e:
        checks.append(Check("vim.auth", False, e.detail, FIX_CONFIG +
                            "; is the cloud reachable from here?"))
        return checks
    checks.append(_catalog_check(conn, s))
    checks.append(_probe("vim.glance", "Glance answers",
                         lambda: list(conn.image.images(limit=1))))
    checks.append(_probe("vim.nova", "Nova answers",
                         lambda: list(conn.compute.flavors(details=False))))
    checks.append(_network_check(drv, s))
    checks.append(_quota_check(conn))
    return checks


def _probe(name: str, ok_text: str, call) -> Check:
    try:
        with os_errors(name):
            call()
        return Check(name, True, ok_text)
    except MecorchError as e:
        return Check(name, False, e.detail, "check that service and its endpoint in the catalog")


def _catalog_check(conn, s) -> Check:
    try:
        with os_errors("read the service catalog"):
            catalog = conn.service_catalog or []
        types = {svc.get("type") for svc in catalog}
        have = {t for t, _ in NEEDED + OPTIONAL if t in types or
                (t == "block-storage" and types & {"volumev3", "volumev2", "volume"})}
        missing = [n for t, n in NEEDED if t not in have]
        detail = "endpoints: " + ", ".join(n for t, n in NEEDED + OPTIONAL if t in have)
        if missing:
            return Check("vim.catalog", False, detail + "; missing: " + ", ".join(missing),
                         f"the cloud's catalog for region {s.region or '(default)'} lacks them")
        return Check("vim.catalog", True, detail)
    except MecorchError as e:
        return Check("vim.catalog", False, e.detail, FIX_CONFIG)


def _network_check(drv, s) -> Check:
    try:
        net_id = drv._network()
        return Check("vim.network", True, f"network {s.network} ({net_id}) exists")
    except MecorchError as e:
        return Check("vim.network", False, e.detail,
                     "set vim.network to a network this project can use")


def _quota_check(conn) -> Check:
    try:
        with os_errors("read the compute quota"):
            q = conn.compute.get_quota_set(conn.current_project_id, usage=True)
        usage = getattr(q, "usage", None) or {}
        parts, full = [], []
        for key in ("instances", "cores", "ram"):
            limit = getattr(q, key, None)
            used = usage.get(key, 0) or 0
            if limit is None or limit < 0:
                parts.append(f"{key} unlimited")
                continue
            parts.append(f"{key} {limit - used} of {limit} free")
            if limit - used <= 0:
                full.append(key)
        if full:
            return Check("vim.quota", False, "; ".join(parts),
                         f"the project's quota leaves no {', '.join(full)}: raise it or free some")
        return Check("vim.quota", True, "; ".join(parts))
    except MecorchError as e:
        return Check("vim.quota", False, e.detail, "the project may not read its own quota?")
