"""The MEPM contract in process: the MEO calls a host-level Orchestrator
directly, with no hop and no extra process (one node; the 100-host
placement benchmark; the MEO's core tests with in-memory drivers)."""

from __future__ import annotations

import json
from pathlib import Path

from mecorch.kernel.errors import Conflict, NotFound
from mecorch.kernel.timeutil import public
from mecorch.mepm.contract import HostInfo, Mepm
from mecorch.mepm import applogs, live, seeds
from mecorch.mepm.hostinfo import backend_health, host_info


class LocalMepm(Mepm):
    def __init__(self, orch, host_id: str):
        self.orch = orch
        self.host_id = host_id

    def info(self) -> HostInfo:
        # the heartbeat: a word from the MEO, as its HTTP request would be
        # (mecorch.mepm.fence)
        self.orch.fence.heard()
        return host_info(self.orch, self.host_id)

    def _package(self, app_d_id: str, versions: tuple) -> dict | None:
        """The host's package of that appDId and (appDVersion,
        appSoftwareVersion)."""
        for doc in self.orch.packages.list(f"(eq,appDId,{app_d_id})"):
            if (doc.get("appDVersion"), doc.get("appSoftwareVersion")) == versions:
                return doc
        return None

    def ensure_package(self, pkg: dict, zip_path: str) -> str:
        have = self._package(pkg["appDId"], _versions(pkg))
        if have is None:
            have = self.orch.packages.onboard({
                "appPkgName": pkg["appPkgName"], "appPkgVersion": pkg["appPkgVersion"],
                "appPkgPath": zip_path, "checksum": pkg["checksum"]}, pkg_id=pkg["id"])
        if have.get("operationalState") == "DISABLED":
            self.orch.packages.modify(have["id"], {"operationState": "ENABLED"})
        return have["id"]

    def remove_package(self, app_d_id: str, versions: tuple) -> None:
        have = self._package(app_d_id, versions)
        if have is None:
            return
        if have["operationalState"] == "ENABLED":
            try:
                self.orch.packages.modify(have["id"], {"operationState": "DISABLED"})
            except Conflict:
                pass                # disabled meanwhile (as RemoteMepm)
        try:
            self.orch.packages.delete(have["id"])
        except NotFound:
            pass                    # gone meanwhile

    def create_instance(self, body: dict, key: str, instance_id: str | None = None) -> dict:
        return self.orch.lcm.create(body, key, instance_id)

    def instantiate(self, instance_id: str, body: dict, key: str) -> dict:
        # in process, the caller is the MEO (its lostAfter is taken)
        return self.orch.lcm.instantiate(instance_id, body, key, from_meo=True)

    def unfence(self, instance_ids: list[str]) -> dict:
        return self.orch.fence.unfence(list(instance_ids))

    def terminate(self, instance_id: str, body: dict) -> dict:
        return self.orch.lcm.terminate(instance_id, body)

    def operate(self, instance_id: str, body: dict) -> dict:
        return self.orch.lcm.operate(instance_id, body)

    def delete_instance(self, instance_id: str) -> None:
        try:
            self.orch.lcm.delete(instance_id)
        except NotFound:
            pass

    def get_instance(self, instance_id: str) -> dict | None:
        try:
            return self.orch.lcm.view(self.orch.lcm.get(instance_id))
        except NotFound:
            return None

    def list_instances(self) -> list[dict]:
        return self.orch.lcm.list()

    def get_op(self, op_id: str) -> dict | None:
        try:
            return self.orch.lcm.op(op_id)
        except NotFound:
            return None

    def ops_of(self, instance_id: str) -> list[dict]:
        return [public(d) for d in self.orch.store.list("op_occs", appInstanceId=instance_id)]

    def rules(self, instance_id: str) -> dict | None:
        try:
            return {"trafficRules": self.orch.mep.list_rules(instance_id, "traffic_rules"),
                    "dnsRules": self.orch.mep.list_rules(instance_id, "dns_rules")}
        except NotFound:
            return None

    def logs(self, instance_id: str, tail: int | None = None) -> tuple[bytes, str]:
        lcm = self.orch.lcm
        return applogs.read(lcm, lcm.logs_dir, instance_id, tail)

    def health(self) -> list[dict]:
        return backend_health(self.orch, self.host_id)

    def export_data(self, instance_id: str, into: Path) -> None:
        self.orch.lcm.export_data(instance_id, Path(into))

    def import_data(self, instance_id: str, archive: Path) -> None:
        lcm = self.orch.lcm
        with open(archive, "rb") as f:      # a copy: the caller's file stays its own
            lcm.import_data(instance_id,
                            lambda out: seeds.copy(f.read, out, lcm.seeds.max_bytes))

    def follow(self, callback_url: str, token: str) -> bool:
        """In process, reading the host's op is a store read: no HTTP
        notification would come sooner."""
        return False

    # a live relocation (mecorch.mepm.live): the values checked as the
    # routes check them, and copied (JSON, as over HTTP: no object shared
    # between the two hosts' engines)
    def live_source(self, instance_id: str) -> dict:
        return _copy(self.orch.lcm.live_source(instance_id))

    def prepare_incoming(self, instance_id: str, body: dict, source: dict) -> dict:
        body, source = live.parse_incoming(_copy({"instantiateAppRequest": body,
                                                  "source": source}))
        return _copy(self.orch.lcm.prepare_incoming(instance_id, body, source))

    def abort_incoming(self, instance_id: str) -> None:
        self.orch.lcm.abort_incoming(instance_id)

    def migrate_out(self, instance_id: str, offer: dict) -> None:
        self.orch.lcm.migrate_out(instance_id, live.parse_migrate(_copy({"offer": offer})))

    def services(self) -> list[dict]:
        return self.orch.mep.services.of_host(self.host_id)


def _copy(doc):
    return json.loads(json.dumps(doc))


def _versions(pkg: dict) -> tuple:
    return (pkg.get("appDVersion"), pkg.get("appSoftwareVersion"))
