"""Application package management (ETSI MEC 010-2 app_pkgm): onboard,
query, enable/disable, delete.

Onboarding is all or nothing: fetch the package (a file, or an HTTP URL on
loopback, downloaded through mecorch.kernel.outbound: no redirect followed, within
orchestrator.package_fetch_timeout_s, streamed to disk), check its checksum, open and verify it (`mecorch.package`:
archive limits, manifest, signature, AppD), put its software image into the
manner's image repository on every host that has that manner, and only then
mark it ONBOARDED. Any failure removes the record, the file and the images:
nothing of a rejected package is kept. The record is written through
CREATED -> UPLOADING -> PROCESSING, so a crash leaves a trace `recover`
cleans up.

Two-step onboarding (how an OSS on another machine onboards): a CreateAppPkg
without appPkgPath makes the package resource in CREATED, and
`upload(id, stream)` (PUT .../package_content) receives the zip into the
same all-or-nothing onboarding. A CREATED resource survives a restart; one
whose upload or processing a crash interrupted is removed like any other.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Protocol

from mecorch.spec import decision, dns_names
from mecorch.kernel import filters, logs, outbound, paging, validate, views
from mecorch.kernel.errors import Conflict, IntegrityError, InvalidInput, MecorchError, NotFound
from mecorch.package import open_package
from mecorch.kernel.states import (
    DeploymentType, InstantiationState, OnboardingState, OperationalState, UsageState)
from mecorch.kernel.store import TABLES, AnyOf, ColumnIn, Has, Store
from mecorch.kernel.fileutil import sha256_file
from mecorch.kernel.events import NONE as NO_EVENTS, Events
from mecorch.kernel.timeutil import new_id, public
from mecorch.driverapi.contracts import ComputeDriver

log = logging.getLogger("mecorch.pkgm")
PKGM = "/app_pkgm/v1"
_VERSION_TAG = re.compile(r"[^A-Za-z0-9_.-]")
# internal fields a listing never shows (the AppD is most of a record)
_LIST_DROPS = ("_appd", "_images", "_path", "_zip", "_image", "_manner")


class ImageHost(Protocol):
    """What packages need of an edge host: its image repositories (the
    compute drivers of the manners it runs) and its CIM's registry. The host
    engine's EdgeHost is one; the package layer names no host engine."""
    def has(self, manner: DeploymentType) -> bool: ...
    def compute(self, manner: DeploymentType) -> ComputeDriver: ...
    def section(self, role: str) -> dict: ...


class ImageHosts(Protocol):
    hosts: dict[str, ImageHost]


class PackageManager:
    def __init__(self, store: Store, inventory: ImageHosts, cfg: dict):
        self.store = store
        self.inventory = inventory
        self.dir = Path(cfg["state_dir"]) / "packages"
        orch = cfg["orchestrator"]
        self.trusted_key = orch.get("trusted_key")
        self.max_bytes = int(orch.get("max_package_bytes", 2 << 30))
        self.fetch_timeout_s = float(orch.get("package_fetch_timeout_s", 600))
        self._lock = threading.Lock()
        self.events: Events = NO_EVENTS         # notifications (mecorch.notifications.subscriptions)

    # ------------------------------------------------------------ onboard
    def onboard(self, body, pkg_id: str | None = None) -> dict:
        """`pkg_id`: the id the MEO gave the package (an MEPM's copy takes
        it: one identity across the levels); a new id otherwise."""
        req = _create_request(body)
        pid = new_id()
        if pkg_id is not None:
            pid = validate.ident(pkg_id, "X-Mecorch-Meo-Id")
            have = self.store.get("packages", pid)
            if have is not None:
                if have.get("_awaitingContent") and have.get("checksum") == req["checksum"] \
                        and req["appPkgPath"] is None \
                        and have["onboardingState"] == OnboardingState.CREATED.value:
                    return public(have)         # the MEO's create again, after a lost answer
                raise Conflict(f"app package {pid} already exists")
        doc = {"id": pid, "appPkgName": req["appPkgName"], "appPkgVersion": req["appPkgVersion"],
               "checksum": req["checksum"], "onboardingState": OnboardingState.CREATED.value,
               "_path": req["appPkgPath"], "_images": []}
        if "userDefinedData" in req:
            doc["userDefinedData"] = req["userDefinedData"]
        if req.get("manner"):                   # mecorch extension: onboard for one manner
            doc["_askedManner"], doc["_askedField"] = req["manner"], req["mannerField"]
        if req["appPkgPath"] is None:            # two-step: the content comes by upload()
            doc["_awaitingContent"] = True
            doc["_links"] = _links(pid)
            return public(self.store.put("packages", pid, doc))
        self.store.put("packages", pid, doc)
        done = self._onboard_or_discard(doc, req, None)
        self.events.package("ONBOARDED", doc)       # doc: as _onboard stored it
        return done

    def upload(self, pkg_id: str, stream) -> dict:
        """Receive the content of a package created without appPkgPath
        (PUT .../package_content): streamed to disk, then the same checks
        and all-or-nothing onboarding as by path. `stream` has read(n) and
        set_limit(n). Content for a package that has it, or is receiving or
        processing it, is a 409. A failure removes the resource."""
        with self._lock:
            doc = self.store.get("packages", pkg_id)
            if doc is None:
                raise NotFound(f"app package {pkg_id!r} does not exist")
            if not doc.get("_awaitingContent") \
                    or doc["onboardingState"] != OnboardingState.CREATED.value:
                raise Conflict(f"app package {pkg_id} is {doc['onboardingState']}: its content "
                               "was already given")
            self._state(doc, OnboardingState.UPLOADING)      # claims the upload
        done = self._onboard_or_discard(doc, {"checksum": doc["checksum"]}, stream)
        self.events.package("ONBOARDED", doc)
        return done

    def _onboard_or_discard(self, doc: dict, req: dict, stream) -> dict:
        try:
            done = public(self._onboard(doc, req, stream))
            logs.event("package.onboarded", package=doc["id"], app=done.get("appDId"),
                       manner=doc.get("_manner"), name=doc.get("appPkgName"))
            return done
        except BaseException as e:
            logs.event("package.onboard_failed", logging.WARNING, package=doc["id"],
                       name=doc.get("appPkgName"),
                       error=getattr(e, "detail", None) or type(e).__name__)
            self._discard(doc)
            if isinstance(e, (MecorchError, KeyboardInterrupt)):
                raise
            log.exception("onboarding failed")
            raise MecorchError(f"onboarding failed: {type(e).__name__}: {e}") from None

    def _onboard(self, doc: dict, req: dict, stream=None) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        zpath = self.dir / f"{doc['id']}.zip"
        self._state(doc, OnboardingState.UPLOADING)
        if stream is None:
            _fetch(req["appPkgPath"], zpath, self.max_bytes, self.fetch_timeout_s)
        else:
            _receive(stream, zpath, self.max_bytes)
        got = sha256_file(zpath)
        if got != req["checksum"]["hash"]:
            raise IntegrityError(f"package checksum mismatch: expected "
                                 f"{req['checksum']['hash']}, got {got}")
        self._state(doc, OnboardingState.PROCESSING)
        pkg = open_package(zpath, trusted_key=self.trusted_key)
        # Upgrades: an appDId may be onboarded once per (appDVersion,
        # appSoftVersion); instances keep the package they were made from.
        version = (str(pkg.appd["appDVersion"]), str(pkg.appd["appSoftVersion"]))
        with self._lock:
            for other in self.store.list("packages", appDId=pkg.app_d_id):
                if other["id"] != doc["id"] and _version_of(other) == version:
                    raise Conflict(f"app package {other['id']} already holds appDId "
                                   f"{pkg.app_d_id!r} at appDVersion {version[0]!r}, "
                                   f"appSoftVersion {version[1]!r}: onboard an upgrade with "
                                   "another appDVersion or appSoftVersion")
            doc["appDId"] = pkg.app_d_id            # claims the appDId at this version
            doc["appDVersion"], doc["appSoftwareVersion"] = version
            self.store.put("packages", doc["id"], doc)
        infos = self._images_to_store(doc, pkg)
        stored = {info.manner.value: self._store_image(doc, pkg, info) for info in infos}
        appd = pkg.appd
        manners = list(stored)
        doc.update({
            "appDId": pkg.app_d_id, "appProvider": appd["appProvider"],
            "appName": appd["appName"], "appSoftwareVersion": appd["appSoftVersion"],
            "appDVersion": appd["appDVersion"],
            "softwareImages": [{
                "id": info.id, "name": info.name, "version": info.version,
                "containerFormat": info.container_format,
                "diskFormat": info.disk_format, "imagePath": stored[info.manner.value],
            } for info in infos],
            "onboardingState": OnboardingState.ONBOARDED.value,
            "operationalState": OperationalState.ENABLED.value,
            "usageState": UsageState.NOT_IN_USE.value,
            # mecorch extensions: the manner(s) recorded for the appDId
            "deploymentTypes": manners,
            # the DNS names its AppD declares, granted to its instances
            # (spec/dns_names.py: they may hold them outside the MEC domain)
            "dnsNames": dns_names.declared(appd),
            "_links": _links(doc["id"]),
            "_appd": appd, "_manner": manners[0], "_image": stored[manners[0]],
            "_manners": manners, "_imageOf": stored, "_zip": str(zpath),
        })
        if len(manners) == 1:
            doc["deploymentType"] = manners[0]
        return self.store.put("packages", doc["id"], doc)

    def _images_to_store(self, doc: dict, pkg) -> list:
        """The package's images to onboard: the one of the manner the
        CreateAppPkg named (it must be in the package), else every image a
        host can run (a dual-format app on a site without a VIM keeps only
        its container image)."""
        asked = doc.get("_askedManner")
        if asked:
            field = doc.get("_askedField", "deploymentType")
            infos = [i for i in pkg.images if i.manner.value == asked]
            if not infos:
                held = " and ".join(f"a {i.manner.value} image ({i.container_format}"
                                    + (f"/{i.disk_format})" if i.disk_format else ")")
                                    for i in pkg.images)
                raise InvalidInput(f"{field} says {asked} but the package holds only {held}")
            return infos
        hosts = self.inventory.hosts.values()
        infos = [i for i in pkg.images if any(h.has(i.manner) for h in hosts)]
        return infos or list(pkg.images[:1])     # none: _store_image says why

    def _store_image(self, doc: dict, pkg, info) -> str:
        """Put one software image into its manner's repository on every host
        that runs that manner; returns the image name deployments use."""
        manner = info.manner
        hosts = [h for h in self.inventory.hosts.values() if h.has(manner)]
        if not hosts:
            raise Conflict(f"no edge host runs {manner.value} apps")
        if manner is DeploymentType.CONTAINER and info.reference:
            # A reference names an image already in the registry: mark it
            # available, then check it is really there.
            image = info.reference
            doc["_images"].append({"image": image, "imported": False, "manner": manner.value})
            self.store.put("packages", doc["id"], doc)
            for host in hosts:
                drv = host.compute(manner)
                drv.set_image_available(image, True)
                drv.check_image(image)
            return image
        if manner is DeploymentType.CONTAINER:
            registry = hosts[0].section("cim")["registry"]
            # The package id in the repository name: a registry deletes a
            # manifest (by digest) with every tag of it in its repository, so
            # two versions of an app with the same image, or orchestrators
            # sharing a registry (a lab, a test run), need a repository each.
            image = f"{registry}/mecorch-apps/{_repo_name(pkg.app_d_id)[:100]}-" \
                    f"{_id_part(doc['id'])}:{_VERSION_TAG.sub('_', info.version or 'latest')[:110]}"
        else:
            # one VM image per package: two versions of an app coexist
            image = f"{pkg.app_d_id[:55]}-{_id_part(doc['id'])}"
        doc["_images"].append({"image": image, "imported": True, "manner": manner.value})
        self.store.put("packages", doc["id"], doc)     # journal before import
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            src = Path(tmp) / "image"
            pkg.extract(info.path, src)
            for host in hosts:
                host.compute(manner).import_image(image, str(src), info.sha256)
        return image

    def _discard(self, doc: dict) -> None:
        """Remove every trace of a package that did not make it."""
        for entry in doc.get("_images", []):
            manner = entry.get("manner") or doc.get("_manner")
            for host in self.inventory.hosts.values():
                for m in ([DeploymentType(manner)] if manner else list(DeploymentType)):
                    if not host.has(m):
                        continue
                    try:
                        drv = host.compute(m)
                        if entry.get("imported"):
                            drv.remove_image(entry["image"])
                        else:
                            drv.set_image_available(entry["image"], False)
                    except MecorchError as e:
                        log.warning("cleanup of image %s: %s", entry["image"], e.detail)
        for suffix in (".zip", ".zip.part"):
            try:
                os.unlink(self.dir / f"{doc['id']}{suffix}")
            except FileNotFoundError:
                pass
        self.store.delete("packages", doc["id"])

    def _state(self, doc: dict, state: OnboardingState) -> None:
        doc["onboardingState"] = state.value
        self.store.put("packages", doc["id"], doc)

    def recover(self) -> list[str]:
        """Clean up packages whose onboarding a crash interrupted; finish
        deletions that were pending."""
        done = []
        # only the rows needing work are decoded: start-up must not read
        # every package of a large store
        for doc in self.store.list("packages", match=AnyOf((
                ColumnIn("onboardingState", (OnboardingState.ONBOARDED.value,), negate=True),
                Has(("_deletionPending",))))):
            if doc.get("_awaitingContent") \
                    and doc["onboardingState"] == OnboardingState.CREATED.value:
                continue                          # waits for its upload, across restarts
            if doc["onboardingState"] != OnboardingState.ONBOARDED.value:
                self._discard(doc)
                done.append(f"removed half-onboarded package {doc['id']}")
            elif doc.get("_deletionPending") and not self._users(doc):
                self._remove(doc)
                done.append(f"finished pending deletion of package {doc['id']}")
        return done

    # ------------------------------------------------------------ queries
    def get(self, pkg_id: str) -> dict:
        doc = self.store.get("packages", pkg_id)
        if doc is None or doc["onboardingState"] != OnboardingState.ONBOARDED.value:
            raise NotFound(f"app package {pkg_id!r} does not exist")
        return doc

    def resource(self, pkg_id: str) -> dict:
        """An onboarded package, or one created for two-step onboarding
        that has not (yet) got its content."""
        doc = self.store.get("packages", pkg_id)
        if doc is not None and doc.get("_awaitingContent") \
                and doc["onboardingState"] != OnboardingState.ONBOARDED.value:
            return doc
        return self.get(pkg_id)

    def by_appd(self, app_d_id: str) -> dict:
        """The package a lookup of `app_d_id` without a version means: the
        newest (last onboarded) version that is ENABLED and not pending
        deletion, else the newest onboarded one (its AppD stays readable)."""
        docs = [d for d in self.store.list("packages", appDId=app_d_id,
                                           onboardingState=OnboardingState.ONBOARDED.value)]
        if not docs:
            raise NotFound(f"no onboarded app package has appDId {app_d_id!r}")
        live = [d for d in docs if d.get("operationalState") == OperationalState.ENABLED.value
                and not d.get("_deletionPending")]
        return (live or docs)[-1]

    def view(self, doc: dict) -> dict:
        return views.package_view(doc)

    def list(self, filter_expr: str | None = None) -> list[dict]:
        docs = self.store.list("packages",
                               match=filters.prefilter(filter_expr, TABLES["packages"]),
                               drop=_LIST_DROPS,
                               onboardingState=OnboardingState.ONBOARDED.value)
        return filters.apply([self.view(d) for d in docs], filter_expr)

    def list_page(self, filter_expr: str | None, marker: str | None,
                  size: int) -> tuple[list[str], str | None]:
        """One page of the listing (NFV-SOL 013 paging, mecorch.kernel.paging): the
        views as the store keeps them, JSON texts."""
        return paging.page(self.store, "packages", filter_expr, marker, size,
                           onboardingState=OnboardingState.ONBOARDED.value)

    def usable(self, app_d_id: str, pkg_id: str | None = None) -> dict:
        """The package an instance of `app_d_id` is made from, if it may be:
        `pkg_id` (the version the instance was created from: its appPkgId),
        else the newest enabled version."""
        if pkg_id:
            doc = self.store.get("packages", pkg_id)
            if doc is None or doc.get("appDId") != app_d_id \
                    or doc["onboardingState"] != OnboardingState.ONBOARDED.value:
                raise NotFound(f"app package {pkg_id!r} of appDId {app_d_id!r} does not exist")
        else:
            doc = self.by_appd(app_d_id)
        if doc["operationalState"] != OperationalState.ENABLED.value:
            raise Conflict(f"app package {doc['id']} ({app_d_id}) is DISABLED")
        if doc.get("_deletionPending"):
            raise Conflict(f"app package {doc['id']} ({app_d_id}) is pending deletion")
        return doc

    # ------------------------------------------------------------ state changes
    def modify(self, pkg_id: str, body) -> dict:
        """PATCH with AppPkgInfoModifications {operationState}."""
        if not isinstance(body, dict) or set(body) != {"operationState"}:
            raise InvalidInput("body must be AppPkgInfoModifications {operationState}")
        try:
            want = OperationalState(body["operationState"])
        except ValueError:
            raise InvalidInput("operationState must be ENABLED or DISABLED") from None
        with self._lock:
            doc = self.get(pkg_id)
            if doc["operationalState"] == want.value:
                raise Conflict(f"app package {pkg_id} is already {want.value}")
            if want is OperationalState.ENABLED and doc.get("_deletionPending"):
                raise Conflict(f"app package {pkg_id} is pending deletion")
            doc["operationalState"] = want.value
            self.store.put("packages", pkg_id, doc)
            self.events.package(want.value, doc)
        logs.event(f"package.{want.value.lower()}", package=pkg_id, app=doc.get("appDId"))
        return {"operationState": want.value}

    def delete(self, pkg_id: str, query: dict | None = None) -> bool:
        """Delete a DISABLED package. Returns False when instances still use
        it: it is then marked pending and removed after its last instance.
        A package still waiting for its content is simply removed.
        `query` may name a deploymentType (or deployMethod), a mecorch
        extension: it must be a manner recorded for the package (400)."""
        unknown = sorted(set(query or {}) - set(decision.TYPE_FIELDS))
        if unknown:
            raise InvalidInput(f"DELETE app_packages has no query parameter(s) "
                               f"{', '.join(u[:40] for u in unknown)}")
        named, field = decision.named_type(query or {}, "the delete request")
        with self._lock:
            doc = self.resource(pkg_id)
            recorded = doc.get("_manners") or ([doc["_manner"]] if doc.get("_manner") else [])
            if named is not None and recorded and named.value not in recorded:
                raise InvalidInput(f"{field} says {named.value} but app package {pkg_id} was "
                                   f"onboarded as {' and '.join(recorded)}")
            if doc["onboardingState"] != OnboardingState.ONBOARDED.value:
                if doc["onboardingState"] != OnboardingState.CREATED.value:
                    raise Conflict(f"app package {pkg_id} is {doc['onboardingState']}: "
                                   "wait for its onboarding to end")
                self.store.delete("packages", pkg_id)
                return True
            if doc["operationalState"] != OperationalState.DISABLED.value:
                raise Conflict(f"app package {pkg_id} is ENABLED: disable it first")
            if self._users(doc):
                doc["_deletionPending"] = True
                self.store.put("packages", pkg_id, doc)
                logs.event("package.deletion_pending", package=pkg_id, app=doc["appDId"])
                return False
            self._remove(doc)
            logs.event("package.deleted", package=pkg_id, app=doc["appDId"])
            return True

    def refresh_usage(self, app_d_id: str, ending: str | None = None) -> None:
        """Recompute usageState of every version of `app_d_id` after an
        instance came or went, and finish the pending deletion of a version
        whose last instance is gone. `ending`: the op occurrence about to
        end (called just before it does, so that whoever sees it ended sees
        the new usage): not counted as running."""
        with self._lock:
            for doc in self.store.list("packages", appDId=app_d_id,
                                       onboardingState=OnboardingState.ONBOARDED.value):
                users = self._users(doc, ending)
                usage = (UsageState.IN_USE if users else UsageState.NOT_IN_USE).value
                if doc.get("_deletionPending") and not users:
                    self._remove(doc)
                    logs.event("package.deleted", package=doc["id"], app=app_d_id,
                               reason="last instance gone")
                elif doc.get("usageState") != usage:
                    doc["usageState"] = usage
                    self.store.put("packages", doc["id"], doc)

    def _users(self, doc: dict, ending: str | None = None) -> int:
        """Instances using this package: made from it (their appPkgId; one
        without, from before versions, counts for every version) and
        instantiated or being instantiated/terminated."""
        # asked at every instantiate and terminate: only the keys it reads
        # `_upgradeTo`: the target of a rolling upgrade under way is in use
        return sum(1 for i in self.store.list("instances", appDId=doc["appDId"],
                                              keep=("appPkgId", "instantiationState", "_opId",
                                                    "_upgradeTo"))
                   if i.get("_upgradeTo") == doc["id"]
                   or (i["appPkgId"] or doc["id"]) == doc["id"]
                   and (i["instantiationState"] == InstantiationState.INSTANTIATED.value
                        or i.get("_opId") and i["_opId"] != ending
                        and self._op_running(i["_opId"])))

    def _op_running(self, op_id: str) -> bool:
        op = self.store.get("op_occs", op_id)
        return bool(op) and op["operationState"] in ("STARTING", "PROCESSING")

    def _remove(self, doc: dict) -> None:
        """Delete the package, its image from the repository, its file."""
        doc["onboardingState"] = OnboardingState.PROCESSING.value   # mark before removing
        self.store.put("packages", doc["id"], doc)
        self._discard(doc)
        self.events.package("DELETED", doc)

    def content_path(self, pkg_id: str) -> str:
        return self.get(pkg_id)["_zip"]


# ---------------------------------------------------------------- helpers
def _create_request(body) -> dict:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a CreateAppPkg object")
    allowed = {"appPkgName", "appPkgVersion", "appPkgPath", "checksum", "appProvider",
               "userDefinedData", *decision.TYPE_FIELDS}
    extra = set(body) - allowed
    if extra:
        raise InvalidInput(f"CreateAppPkg has no field(s) {', '.join(sorted(extra))}")
    out = {"appPkgName": validate.text(body.get("appPkgName"), "appPkgName", 128),
           "appPkgVersion": validate.text(body.get("appPkgVersion"), "appPkgVersion", 64),
           # absent: two-step onboarding, the content comes by PUT .../package_content
           "appPkgPath": None if "appPkgPath" not in body
           else validate.text(body["appPkgPath"], "appPkgPath", 2048)}
    cs = body.get("checksum")
    if not isinstance(cs, dict) or set(cs) != {"algorithm", "hash"}:
        raise InvalidInput("checksum must be {algorithm, hash}")
    if str(cs["algorithm"]).upper().replace("-", "") != "SHA256":
        raise InvalidInput("checksum.algorithm must be SHA-256")
    out["checksum"] = {"algorithm": "SHA-256", "hash": validate.sha256(cs["hash"], "checksum.hash")}
    if "appProvider" in body:
        validate.text(body["appProvider"], "appProvider", 128)
    named, field = decision.named_type(body, "CreateAppPkg")     # mecorch extension
    out["manner"], out["mannerField"] = (named.value, field) if named else (None, None)
    if "userDefinedData" in body:
        udd = body["userDefinedData"]
        if not isinstance(udd, dict) or len(udd) > 32:
            raise InvalidInput("userDefinedData must be an object of at most 32 pairs")
        for k, v in udd.items():
            validate.text(k, "userDefinedData key", 64)
            validate.text(v if isinstance(v, str) else str(v), f"userDefinedData.{k}", 1024)
        out["userDefinedData"] = udd
    return out


def _fetch(path: str, dest: Path, max_bytes: int, deadline_s: float) -> None:
    """Copy the package from a local file or a loopback HTTP URL to `dest`,
    refusing more than `max_bytes`; a download ends within `deadline_s`."""
    parts = urllib.parse.urlsplit(path)
    part = dest.with_suffix(".zip.part")
    if parts.scheme in ("http", "https"):
        _download(path, part, max_bytes, deadline_s)
    elif parts.scheme in ("", "file"):
        local = Path(urllib.parse.unquote(parts.path) if parts.scheme else path)
        if not local.is_absolute():
            raise InvalidInput("appPkgPath: a local path must be absolute")
        try:
            if not local.is_file():
                raise InvalidInput(f"appPkgPath: {local} is not a file")
            with open(local, "rb") as src, open(part, "wb") as out:
                _copy_limited(src, out, max_bytes)
        except OSError as e:
            raise InvalidInput(f"appPkgPath: cannot read {local}: {e.strerror}") from None
    else:
        raise InvalidInput("appPkgPath must be an absolute path, a file: URL or a loopback http URL")
    os.replace(part, dest)


def _download(url: str, part: Path, max_bytes: int, deadline_s: float) -> None:
    """GET an http(s) appPkgPath on loopback into `part`, through
    mecorch.kernel.outbound: no redirect followed (a 3xx is refused naming it),
    the whole download within `deadline_s`, the body streamed to disk."""
    if not outbound.is_loopback(urllib.parse.urlsplit(url).hostname):
        raise InvalidInput("appPkgPath: HTTP URLs must point at loopback")

    def to_disk(resp) -> None:
        if resp.status == 200:
            with open(part, "wb") as out:
                _copy_limited(resp, out, max_bytes)
    try:
        got = outbound.request(url, "GET", deadline_s, headers={"Accept": "application/zip"},
                               sink=to_disk)
    except outbound.DeadlineExceeded:
        raise InvalidInput(f"appPkgPath: {url} was not downloaded within "
                           f"orchestrator.package_fetch_timeout_s ({deadline_s:g} s)") from None
    except (OSError, http.client.HTTPException) as e:
        raise InvalidInput(f"appPkgPath: cannot fetch {url}: {e}") from None
    if 300 <= got.status < 400:
        raise InvalidInput(f"appPkgPath: {url} answered HTTP {got.status} (a redirect, to "
                           f"{got.headers.get('location', 'nowhere given')}); redirects are "
                           "not followed: give the package's own URL")
    if got.status != 200:
        raise InvalidInput(f"appPkgPath: {url} answered HTTP {got.status}")


def _receive(stream, dest: Path, max_bytes: int) -> None:
    """Write an uploaded body to `dest`, block by block, refusing more
    than `max_bytes`."""
    part = dest.with_suffix(".zip.part")
    stream.set_limit(max_bytes)
    with open(part, "wb") as out:
        while block := stream.read(1 << 20):
            out.write(block)
    if os.path.getsize(part) == 0:
        raise InvalidInput("the package content is empty")
    os.replace(part, dest)


def _links(pkg_id: str) -> dict:
    return {"self": {"href": f"{PKGM}/app_packages/{pkg_id}"},
            "appD": {"href": f"{PKGM}/app_packages/{pkg_id}/appd"},
            "appPkgContent": {"href": f"{PKGM}/app_packages/{pkg_id}/package_content"}}


def _version_of(doc: dict) -> tuple[str | None, str | None]:
    return doc.get("appDVersion"), doc.get("appSoftwareVersion")


def _copy_limited(src, out, max_bytes: int) -> None:
    total = 0
    while block := src.read(1 << 20):
        total += len(block)
        if total > max_bytes:
            raise InvalidInput(f"appPkgPath: package is larger than {max_bytes} bytes")
        out.write(block)


def _id_part(pkg_id: str) -> str:
    """Eight characters of a package id for its image's name: the id's own
    head when it is a UUID (every id mecorch makes), else a digest of it
    (an id the MEO gave, of any letters: an image name is lower case, and
    ids with a common head must not share a repository)."""
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f-]{27}", pkg_id):
        return pkg_id[:8]
    return hashlib.sha256(pkg_id.encode()).hexdigest()[:8]


def _repo_name(app_d_id: str) -> str:
    """A registry repository name from an appDId (lower case, [a-z0-9._-])."""
    name = re.sub(r"[^a-z0-9]+", "-", app_d_id.lower()).strip("-")
    return name or "app"

