"""App packages for the whole system (the MEO's app_pkgm for the OSS).

Onboarding is the host level's, with every check (checksum, manifest,
signature, AppD), all or nothing; what differs is where the image goes:
nowhere yet. The MEO keeps the verified zip and hands it to an edge host's
MEPM on the first instance placed there (`ensure_package`), which puts the
image into that host's own repository. On first use, not at onboarding
for every host: an onboarding must not fail because one edge host is away,
and a small host should not carry the images of apps it never runs.
Deleting a package deletes the hosts' copies too (a host that is away
gets its deletion when it answers again).
"""

from __future__ import annotations

import logging

from mecorch.kernel.errors import MecorchError
from mecorch.package.manager import PackageManager, _repo_name
from mecorch.kernel.states import DeploymentType

log = logging.getLogger("mecorch.meo.packages")


class SystemPackages(PackageManager):
    registry = None         # set by the MEO once its host registry exists

    def _images_to_store(self, doc: dict, pkg) -> list:
        asked = doc.get("_askedManner")
        if asked:
            return super()._images_to_store(doc, pkg)
        return list(pkg.images)         # the hosts decide which they can run

    def _store_image(self, doc: dict, pkg, info) -> str:
        # The host names its own image (its registry, its VM repository);
        # the MEO only needs to know which manners the package holds.
        # A well-formed placeholder: the request is validated as the host will
        # validate it, but nothing is ever pulled by this name.
        if info.manner is DeploymentType.CONTAINER:
            return f"mecorch-meo/{_repo_name(pkg.app_d_id)}:package"
        return pkg.app_d_id

    def record_host_copy(self, pkg_id: str, host_id: str, host_pkg_id: str) -> None:
        with self._lock:
            doc = self.store.get("packages", pkg_id)
            if doc is None:
                return
            copies = doc.setdefault("_hostCopies", {})
            if copies.get(host_id) != host_pkg_id:
                copies[host_id] = host_pkg_id
                self.store.put("packages", pkg_id, doc)

    def _remove(self, doc: dict) -> None:
        pending = []
        for host_id in sorted(doc.get("_hostCopies") or {}):
            try:
                self.registry.get(host_id).mepm.remove_package(
                    doc["appDId"], (doc.get("appDVersion"), doc.get("appSoftwareVersion")))
            except MecorchError as e:
                log.warning("package %s: copy on host %s not removed yet: %s",
                            doc["id"], host_id, e.detail)
                pending.append(host_id)
        for host_id in pending:
            key = f"{host_id}|remove|{doc['id']}"
            self.store.put("host_tasks", key,
                           {"id": key, "hostId": host_id, "removePackage": doc["appDId"],
                            "versions": [doc.get("appDVersion"), doc.get("appSoftwareVersion")]})
        super()._remove(doc)

    def host_tasks(self, host_id: str) -> list[str]:
        """Run what a host missed while it was away; returns what was done."""
        done = []
        for task in self.store.list("host_tasks", hostId=host_id):
            app = task.get("removePackage")
            if app is None:
                continue
            try:
                self.registry.get(host_id).mepm.remove_package(app, tuple(task["versions"]))
            except MecorchError as e:
                log.warning("host %s: package %s still not removed: %s", host_id, app, e.detail)
                continue
            self.store.delete("host_tasks", task["id"])
            done.append(f"removed package {app} from host {host_id}")
        return done
