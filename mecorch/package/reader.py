"""open_package: every check a package must pass, in order, before any of
it is used. The order matters: the zip layer first (nothing is read from a
hostile archive), then TOSCA.meta and the manifest, the signature (before
the manifest is trusted), every file's hash, and only then the AppD."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..fileutil import sha256_file, unlink_quietly
from ..errors import IntegrityError, InvalidInput
from ..states import DeploymentType
from ..yamlsafe import MAX_YAML_BYTES, load_yaml
from . import appd as appd_mod
from .archive import (DEFAULT_LIMITS, ArchiveLimits, hash_member, member_files,
                      open_zip, read_member, stream_member)
from .meta import META_PATH, SIGNATURE_SUFFIX, parse_manifest, parse_tosca_meta, verify_signature

MAX_META_BYTES = 64 << 10
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 16 << 10


@dataclass(frozen=True)
class Package:
    """A verified package. `files` are its regular files, `hashes` their
    SHA-256 from the (verified) manifest. Members are read again from
    `path` by extract(), which re-verifies what it streams out."""
    path: Path
    sha256: str                         # of the whole zip file
    files: tuple[str, ...]
    hashes: dict[str, str]
    tosca_meta: dict[str, str]
    manifest: str                       # member name of the manifest
    manifest_metadata: dict[str, str]
    signed: bool                        # a signature file is present
    signature_verified: bool            # ... and it verified with the trusted key
    appd_path: str
    appd: dict
    app_d_id: str
    manner: DeploymentType
    image: appd_mod.ImageInfo                       # the first of `images`
    compute: dict = field(default_factory=dict)     # {vcpu, memory_mb}
    storage: tuple[dict, ...] = ()                  # [{id, typeOfStorage, size_gb}]
    limits: ArchiveLimits = DEFAULT_LIMITS
    # every software image, one per manner (two for a dual-format app)
    images: tuple[appd_mod.ImageInfo, ...] = ()

    def extract(self, member: str, dest_path: str | os.PathLike) -> Path:
        """Stream one file of the package to `dest_path` (written
        atomically), checking its size and its manifest hash on the way."""
        if member not in self.hashes:
            raise InvalidInput(f"{member!r} is not a file of package {self.app_d_id}")
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open_zip(self.path, self.limits) as zf:
                for chunk in stream_member(zf, member):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != self.hashes[member]:
                raise IntegrityError(f"{member}: SHA-256 does not match the manifest "
                                     "(the package changed after it was opened)")
            os.replace(tmp, dest)
        except BaseException:
            unlink_quietly(tmp)
            raise
        return dest


def _trusted_signature(zf, manifest: str, manifest_bytes: bytes, files: list[str],
                       trusted_key) -> tuple[bool, bool]:
    sig_name = manifest + SIGNATURE_SUFFIX
    signed = sig_name in files
    if trusted_key is None:
        return signed, False
    if not signed:
        raise IntegrityError(f"package is not signed (no {sig_name}) but a trusted key "
                             "is configured")
    signature = read_member(zf, sig_name, MAX_SIGNATURE_BYTES, "signature")
    verify_signature(manifest_bytes, signature, trusted_key, manifest)
    return True, True


def _image(zf, sw: dict, manner: DeploymentType, hashes: dict[str, str]) -> appd_mod.ImageInfo:
    kind, where = appd_mod.image_location(sw["swImage"], manner, set(hashes))
    common = dict(id=sw["id"], name=sw["name"], version=sw["version"],
                  container_format=sw["containerFormat"], disk_format=sw["diskFormat"],
                  min_disk_gb=sw.get("minDisk"), min_ram_mb=sw.get("minRam"), manner=manner)
    if kind == "reference":
        return appd_mod.ImageInfo(reference=where, sha256=sw["checksum"], **common)
    chunks = stream_member(zf, where)
    head = next(chunks, b"")[:512]
    chunks.close()
    appd_mod.check_image_head(head, where, manner, sw["diskFormat"])
    if sw["checksum"] and sw["checksum"] != hashes[where]:
        raise IntegrityError(f"{where}: SHA-256 does not match swImageDescriptor.checksum")
    return appd_mod.ImageInfo(path=where, sha256=hashes[where],
                              size=zf.getinfo(where).file_size, **common)


def open_package(zip_path: str | os.PathLike, trusted_key: str | os.PathLike | bytes | None = None,
                 limits: ArchiveLimits = DEFAULT_LIMITS) -> Package:
    """Open and verify a package, or raise: InvalidInput (PayloadTooLarge
    for size limits) for a malformed package, IntegrityError for a
    checksum, manifest or signature mismatch. `trusted_key` (a PEM public
    key file path, or PEM bytes) makes a valid signature mandatory."""
    path = Path(zip_path)
    if not path.is_file():
        raise InvalidInput(f"package {path} is not a file")
    with open_zip(path, limits) as zf:
        files = member_files(zf)
        if META_PATH not in files:
            raise InvalidInput(f"package has no {META_PATH}")
        meta = parse_tosca_meta(read_member(zf, META_PATH, MAX_META_BYTES, "TOSCA.meta"))
        manifest, appd_path = meta["ETSI-Entry-Manifest"], meta["Entry-Definitions"]
        for key, name in (("ETSI-Entry-Manifest", manifest), ("Entry-Definitions", appd_path)):
            if name not in files:
                raise InvalidInput(f"{META_PATH}: {key} names {name}, which is not in the package")
        manifest_bytes = read_member(zf, manifest, MAX_MANIFEST_BYTES, "manifest")
        metadata, hashes = parse_manifest(manifest_bytes, manifest)
        signed, verified = _trusted_signature(zf, manifest, manifest_bytes, files, trusted_key)

        covered = [f for f in files if f not in (manifest, manifest + SIGNATURE_SUFFIX)]
        for name in covered:
            if name not in hashes:
                raise IntegrityError(f"{name} is not listed in the manifest {manifest}")
        for name in sorted(hashes):
            if name not in covered:
                raise IntegrityError(f"manifest {manifest} lists {name}, which is not "
                                     "in the package")
        for name in covered:
            if hash_member(zf, name) != hashes[name]:
                raise IntegrityError(f"{name}: SHA-256 does not match the manifest {manifest}")

        appd = load_yaml(read_member(zf, appd_path, MAX_YAML_BYTES, "AppD"), f"AppD {appd_path}")
        info = appd_mod.validate_appd(appd)
        images = tuple(_image(zf, i["sw_image"], i["manner"], hashes) for i in info["images"])
        image = images[0]
    return Package(path=path, sha256=sha256_file(path), files=tuple(files), hashes=hashes,
                   tosca_meta=meta, manifest=manifest, manifest_metadata=metadata,
                   signed=signed, signature_verified=verified, appd_path=appd_path,
                   appd=appd, app_d_id=info["app_d_id"], manner=info["manner"],
                   image=image, compute=info["compute"], storage=tuple(info["storage"]),
                   limits=limits, images=images)
