"""A cordon taken at one MEO replica on PostgreSQL (`meo.database`, the
session's private cluster: tests/support/pglab.py) counts at the other at
once: both read it from the store at each placement. The hosts are
in-process MEPMs on the in-memory fake drivers (support/meolab.py)."""

from __future__ import annotations

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import CapacityExceeded
from mecorch.meo.orchestrator import MeoOrchestrator
from mecorch.kernel.states import DeploymentType
from mecorch.mepm.local import LocalMepm
from mecorch.spec import placement
from mecorch.spec.capacity import Need
from support.meolab import host

pytestmark = pytest.mark.postgres


def test_a_cordon_at_one_replica_counts_at_the_other(pgdatabase, tmp_path):
    hosts = {hid: host(tmp_path, hid)[0] for hid in ("edge1", "edge2")}
    replicas = []
    try:
        for name in ("a", "b"):
            cfg = config.load()
            cfg["state_dir"], cfg["hosts"] = str(tmp_path / name), []
            cfg["meo"].update(heartbeat_s=0, database=pgdatabase)
            meo = MeoOrchestrator(cfg)
            replicas.append(meo)
            for hid, orch in hosts.items():
                meo.registry.attach(LocalMepm(orch, hid))
        a, b = replicas
        a.registry.cordon("edge1", "maintenance")
        assert b.registry.view("edge1")["cordoned"]["reason"] == "maintenance"
        assert {c.host_id: c.cordoned for c in b.registry.candidates()} == {
            "edge1": "maintenance", "edge2": None}
        b.registry.sync_members()       # the cordon's row (no url) is no registration
        assert [e.source for e in b.registry.entries()] == ["in-process", "in-process"]
        b.registry.cordon("edge2")
        with pytest.raises(CapacityExceeded) as e:
            placement.place(DeploymentType.CONTAINER, Need(1, 64, 0), a.registry.candidates())
        assert "edge1: cordoned (maintenance); edge2: cordoned)" in e.value.detail
        assert b.registry.uncordon("edge1") and not a.registry.uncordon("edge1")
        assert a.registry.cordons() == {"edge2": b.registry.cordons()["edge2"]}
    finally:
        for meo in replicas:
            meo.close()
        for orch in hosts.values():
            orch.close()
