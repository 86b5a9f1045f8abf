"""open_package: every check a package must pass, in order, before any of
it is used. The order matters: the zip layer first (nothing is read from a
hostile archive), then TOSCA.meta and the manifest, the signature (before
the manifest is trusted), every file's hash, and only then the AppD.

Layouts read (`Package.layout`), told apart by TOSCA.meta and the files:

- "SOL004": a SOL004 CSAR whose TOSCA.meta names the manifest with
  ETSI-Entry-Manifest (SOL004 2.6 and later; what `mecorch package build`
  writes).
- "SOL004-pre-2.6": a SOL004 CSAR without ETSI-Entry-Manifest: the manifest
  is the root .mf named like the Entry-Definitions file, else the only
  root .mf.
- "EdgeGallery": Entry-Definitions names a zip (APPD/x.zip) holding the
  TOSCA AppD (its own TOSCA_VNFD.meta, or TOSCA-Metadata/TOSCA.meta, names
  it; else the one MainServiceTemplate.yaml), the image descriptors are in
  Image/SwImageDesc.json and the images may sit inside zips
  ("Image/x.zip/dir/app.tar"). The manifest is found as for pre-2.6.

In every layout the AppD is a MEC 010-2 YAML AppD or a TOSCA AppD
(tosca_appd.py), told apart by content; TOSCA.meta may be left out of the
manifest (EdgeGallery and several SOL004 tools do) but is checked when
listed. Nested zips pass the same archive checks as the package (limits,
names, types, ratio, overlap) and are never opened more than one level deep.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mecorch.kernel.fileutil import sha256_file, unlink_quietly
from mecorch.kernel.errors import IntegrityError, InvalidInput
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.yamlsafe import MAX_YAML_BYTES, load_yaml
from mecorch.package import appd as appd_mod
from mecorch.package import tosca_appd
from mecorch.package.archive import (
    DEFAULT_LIMITS, ArchiveLimits, check_member_name, hash_member, member_files, open_zip,
    open_zip_file, read_member, stream_member)
from mecorch.package.meta import (
    META_PATH, SIGNATURE_SUFFIX, meta_block, parse_manifest, parse_tosca_meta, verify_signature)
from mecorch.kernel.errors import MecorchError, PayloadTooLarge

MAX_META_BYTES = 64 << 10
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 16 << 10
MAX_APPD_ZIP_BYTES = 16 << 20          # a zipped AppD is text: a few kB
LAYOUTS = ("a SOL004 CSAR with ETSI-Entry-Manifest in TOSCA-Metadata/TOSCA.meta (mecorch's "
           "own, from `mecorch package build`), a SOL004 CSAR without it (the manifest is the "
           "root .mf named like Entry-Definitions, or the only root .mf), or an "
           "EdgeGallery-style CSAR (Entry-Definitions names a zipped APPD holding a TOSCA AppD, "
           "Image/SwImageDesc.json describes the images)")


def layout_error(what: str) -> InvalidInput:
    return InvalidInput(f"package layout not recognised: {what}. mecorch reads {LAYOUTS}")


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
    layout: str = "SOL004"                          # see the module docstring
    appd_format: str = "MEC 010-2"                  # or "TOSCA"
    # the image inside a zip of the package: (zip member, member inside it)
    image_nested: tuple[str, str] | None = None
    # every software image, one per manner (two for a dual-format app)
    images: tuple[appd_mod.ImageInfo, ...] = ()

    def extract(self, member: str, dest_path: str | os.PathLike) -> Path:
        """Stream one file of the package to `dest_path` (written
        atomically), checking its size and its manifest hash on the way."""
        nested = self.image_nested if member == self.image.path else None
        if member not in self.hashes and not nested:
            raise InvalidInput(f"{member!r} is not a file of package {self.app_d_id}")
        if nested:
            return self._extract_nested(nested, Path(dest_path))
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

    def _extract_nested(self, nested: tuple[str, str], dest: Path) -> Path:
        """The image inside a zip of the package: the zip is copied out
        (checked against the manifest), then the image streamed out of it
        (checked against the SHA-256 taken when the package was opened)."""
        outer, inner = nested
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with tempfile.TemporaryDirectory(dir=dest.parent) as work, \
                    open_zip(self.path, self.limits) as zf, \
                    _nested_zip(zf, outer, self.hashes[outer], Path(work), self.limits) as inz:
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in stream_member(inz, inner):
                        h.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            if h.hexdigest() != self.image.sha256:
                raise IntegrityError(f"{self.image.path}: SHA-256 changed since the package "
                                     "was opened")
            os.replace(tmp, dest)
        except BaseException:
            unlink_quietly(tmp)
            raise
        return dest


def _nested_zip(zf, member: str, sha256: str, work: Path, limits: ArchiveLimits):
    """Copy a zip member to `work` (checking its manifest hash on the way)
    and open it with the package's archive checks; errors name the member."""
    dest = work / "nested.zip"
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for chunk in stream_member(zf, member):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != sha256:
        raise IntegrityError(f"{member}: SHA-256 does not match the manifest")
    try:
        return open_zip_file(open(dest, "rb"), dest.stat().st_size, limits, member)
    except MecorchError as e:
        raise _named(e, member) from None


def _named(e: MecorchError, member: str) -> MecorchError:
    detail = e.detail if e.detail.startswith(member) else f"{member}: {e.detail}"
    err = type(e)(detail)
    return err


def one_line(load, *args):
    """Call a loader; its error, PyYAML's multi-line report with a caret
    included, becomes one line (one message per refusal)."""
    try:
        return load(*args)
    except MecorchError as e:
        raise type(e)(" ".join(e.detail.split())) from None


def find_manifest(files: list[str], entry: str) -> str:
    """The manifest of a CSAR whose TOSCA.meta does not name one: the root
    .mf named like the Entry-Definitions file, else the only root .mf."""
    roots = [f for f in files if "/" not in f and f.endswith(".mf")]
    stem = posixpath.splitext(posixpath.basename(entry))[0]
    if f"{stem}.mf" in roots:
        return f"{stem}.mf"
    if len(roots) == 1:
        return roots[0]
    if not roots:
        raise layout_error("TOSCA-Metadata/TOSCA.meta has no ETSI-Entry-Manifest and the "
                           "package has no .mf manifest at its root")
    raise layout_error(f"TOSCA-Metadata/TOSCA.meta has no ETSI-Entry-Manifest and the root "
                       f"has {len(roots)} .mf files ({', '.join(roots[:4])}), none named "
                       f"{stem}.mf like Entry-Definitions {entry}")


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


def _image(zf, sw: dict, manner: DeploymentType, hashes: dict[str, str],
           declared: tuple[str, str] | None, work: Path, limits: ArchiveLimits):
    """(ImageInfo, nested location or None). `declared`: the checksum a
    TOSCA AppD or SwImageDesc.json gives, in any algorithm it may use."""
    common = dict(id=sw["id"], name=sw["name"], version=sw["version"],
                  container_format=sw["containerFormat"], disk_format=sw["diskFormat"],
                  min_disk_gb=sw.get("minDisk"), min_ram_mb=sw.get("minRam"), manner=manner)
    nested = _nested_location(sw["swImage"], hashes)
    if nested:
        return _nested_image(zf, nested, sw, manner, hashes, declared, work, limits, common)
    kind, where = appd_mod.image_location(sw["swImage"], manner, set(hashes))
    if kind == "reference":
        return appd_mod.ImageInfo(reference=where, sha256=sw["checksum"], **common), None
    chunks = stream_member(zf, where)
    head = next(chunks, b"")[:512]
    chunks.close()
    appd_mod.check_image_head(head, where, manner, sw["diskFormat"])
    if sw["checksum"] and sw["checksum"] != hashes[where]:
        raise IntegrityError(f"{where}: SHA-256 does not match swImageDescriptor.checksum")
    if declared and declared[0] != "sha256":
        h = hashlib.new(declared[0])
        for chunk in stream_member(zf, where):
            h.update(chunk)
        _check_declared(h.hexdigest(), declared, where)
    return appd_mod.ImageInfo(path=where, sha256=hashes[where],
                              size=zf.getinfo(where).file_size, **common), None


def _check_declared(got: str, declared: tuple[str, str], where: str) -> None:
    if got != declared[1]:
        raise IntegrityError(f"{where}: {declared[0].upper()} is {got}, the image descriptor "
                             f"says {declared[1]}")


def _nested_location(swimage: str, hashes: dict[str, str]) -> tuple[str, str] | None:
    """("Image/x.zip", "dir/app.tar") for swImage "Image/x.zip/dir/app.tar"
    when Image/x.zip is a file of the package."""
    parts = swimage.split("/")
    for n in range(1, len(parts)):
        outer = "/".join(parts[:n])
        if outer in hashes and outer.lower().endswith(".zip"):
            inner = "/".join(parts[n:])
            check_member_name(outer, "swImageDescriptor.swImage")
            check_member_name(inner, "swImageDescriptor.swImage")
            return outer, inner
    return None


def _nested_image(zf, nested, sw, manner, hashes, declared, work, limits, common):
    outer, inner = nested
    shown = f"{outer}/{inner}"
    with _nested_zip(zf, outer, hashes[outer], work, limits) as inz:
        if inner not in member_files(inz):
            raise InvalidInput(f"swImageDescriptor.swImage: {shown}: {inner!r} is not a file "
                               f"in {outer}")
        if inner.lower().endswith(".zip"):
            raise InvalidInput(f"swImageDescriptor.swImage: {shown}: an image zipped more than "
                               "one level deep is not read")
        h = hashlib.sha256()
        d = hashlib.new(declared[0]) if declared and declared[0] != "sha256" else None
        head = b""
        try:
            for chunk in stream_member(inz, inner):
                if len(head) < 512:
                    head += chunk[:512 - len(head)]
                h.update(chunk)
                if d:
                    d.update(chunk)
        except MecorchError as e:
            raise _named(e, outer) from None
        size = inz.getinfo(inner).file_size
    appd_mod.check_image_head(head, shown, manner, sw["diskFormat"])
    if sw["checksum"] and sw["checksum"] != h.hexdigest():
        raise IntegrityError(f"{shown}: SHA-256 does not match the image descriptor's checksum")
    if d:
        _check_declared(d.hexdigest(), declared, shown)
    return appd_mod.ImageInfo(path=shown, sha256=h.hexdigest(), size=size, **common), nested


def _appd_zip(zf, member: str, sha256: str, work: Path, limits: ArchiveLimits):
    """(service template path, its bytes, reader of the zip's other files,
    the open zip to close) of an EdgeGallery zipped APPD. Files are read
    when asked for, each at most MAX_YAML_BYTES: a zip of many small
    well-compressed files must not be expanded whole into memory."""
    if zf.getinfo(member).file_size > MAX_APPD_ZIP_BYTES:
        raise PayloadTooLarge(f"{member}: a zipped AppD larger than {MAX_APPD_ZIP_BYTES} bytes")
    inz = _nested_zip(zf, member, sha256, work, limits)
    try:
        files = set(member_files(inz))

        def read(name: str) -> bytes | None:
            if name not in files:
                return None
            try:
                return read_member(inz, name, MAX_YAML_BYTES, "AppD file")
            except MecorchError as e:
                raise _named(e, member) from None
        metas = [f for f in ("TOSCA_VNFD.meta", "TOSCA_VNFS.meta", META_PATH) if f in files]
        if metas:
            meta = meta_block(read(metas[0]), f"{member}: {metas[0]}")
            entry = meta.get("Entry-Definitions")
            if not entry:
                raise layout_error(f"{member}: {metas[0]} has no Entry-Definitions")
            check_member_name(entry, f"{member}: {metas[0]} Entry-Definitions")
        else:
            mains = [f for f in files if posixpath.basename(f) == "MainServiceTemplate.yaml"]
            if len(mains) != 1:
                raise layout_error(f"{member} is a zipped APPD without TOSCA_VNFD.meta and "
                                   f"with {len(mains)} MainServiceTemplate.yaml")
            entry = mains[0]
        if entry not in files or not entry.lower().endswith((".yaml", ".yml")):
            raise layout_error(f"{member}: Entry-Definitions names {entry}, which is not a "
                               f"YAML file in {member}")
        return entry, read(entry), read, inz
    except BaseException:
        inz.close()
        raise


def _swimagedesc(zf, files: list[str]) -> tuple[list[dict] | None, str]:
    found = [f for f in files if f.count("/") == 1 and f.endswith("/" + tosca_appd.SWIMAGEDESC)]
    if len(found) > 1:
        raise InvalidInput(f"package has {len(found)} {tosca_appd.SWIMAGEDESC} files "
                           f"({', '.join(found)}); one describes the images")
    if not found:
        return None, "Image/" + tosca_appd.SWIMAGEDESC
    data = read_member(zf, found[0], tosca_appd.MAX_SWIMAGEDESC_BYTES, tosca_appd.SWIMAGEDESC)
    return tosca_appd.read_swimagedesc(data, found[0]), found[0]


def open_package(zip_path: str | os.PathLike, trusted_key: str | os.PathLike | bytes | None = None,
                 limits: ArchiveLimits = DEFAULT_LIMITS) -> Package:
    """Open and verify a package, or raise: InvalidInput (PayloadTooLarge
    for size limits) for a malformed package, IntegrityError for a
    checksum, manifest or signature mismatch. `trusted_key` (a PEM public
    key file path, or PEM bytes) makes a valid signature mandatory."""
    path = Path(zip_path)
    if not path.is_file():
        raise InvalidInput(f"package {path} is not a file")
    with open_zip(path, limits) as zf, \
            tempfile.TemporaryDirectory(dir=path.parent, prefix=".mecorch-open-") as work, \
            contextlib.ExitStack() as opened:
        work = Path(work)
        files = member_files(zf)
        if META_PATH not in files:
            raise layout_error(f"the package has no {META_PATH}")
        meta = parse_tosca_meta(read_member(zf, META_PATH, MAX_META_BYTES, "TOSCA.meta"))
        appd_path = meta["Entry-Definitions"]
        if appd_path not in files:
            raise InvalidInput(f"{META_PATH}: Entry-Definitions names {appd_path}, which is "
                               "not in the package")
        if "ETSI-Entry-Manifest" in meta:
            manifest = meta["ETSI-Entry-Manifest"]
            if manifest not in files:
                raise InvalidInput(f"{META_PATH}: ETSI-Entry-Manifest names {manifest}, which "
                                   "is not in the package")
        else:
            manifest = find_manifest(files, appd_path)
        zipped_appd = appd_path.lower().endswith(".zip")
        layout = ("EdgeGallery" if zipped_appd else
                  "SOL004" if "ETSI-Entry-Manifest" in meta else "SOL004-pre-2.6")
        manifest_bytes = read_member(zf, manifest, MAX_MANIFEST_BYTES, "manifest")
        metadata, hashes = parse_manifest(manifest_bytes, manifest)
        signed, verified = _trusted_signature(zf, manifest, manifest_bytes, files, trusted_key)

        covered = [f for f in files if f not in (manifest, manifest + SIGNATURE_SUFFIX)]
        for name in covered:
            # TOSCA.meta only points at files the manifest covers: several
            # tools (EdgeGallery's among them) leave it out. Not when the
            # signature is checked: then which file is the AppD is signed too.
            if name not in hashes and (name != META_PATH or verified):
                raise IntegrityError(f"{name} is not listed in the manifest {manifest}")
        for name in sorted(hashes):
            if name not in covered:
                raise IntegrityError(f"manifest {manifest} lists {name}, which is not "
                                     "in the package")
        for name in covered:
            if name in hashes and hash_member(zf, name) != hashes[name]:
                raise IntegrityError(f"{name}: SHA-256 does not match the manifest {manifest}")

        if zipped_appd:
            inner, text, read_inner, inz = _appd_zip(zf, appd_path, hashes[appd_path], work,
                                                     limits)
            opened.callback(inz.close)
            shown = f"{appd_path}:{inner}"
        else:
            inner, shown = appd_path, appd_path
            text = read_member(zf, appd_path, MAX_YAML_BYTES, "AppD")

            def read_inner(name):
                return read_member(zf, name, MAX_YAML_BYTES, "AppD import") \
                    if name in hashes else None
        doc = one_line(load_yaml, text, f"AppD {shown}")
        declared = None
        if tosca_appd.is_tosca(doc):
            tosca_appd.plain_yaml(text, f"AppD {shown}")
            swimagedesc, sid_where = _swimagedesc(zf, files)

            def resolve(file: str, where: str) -> str:
                # artifact files are relative to the service template (SOL001);
                # tools also write them from the package root
                base = "" if zipped_appd else posixpath.dirname(appd_path)
                for cand in (posixpath.normpath(posixpath.join(base, file)), file.lstrip("/")):
                    if cand in hashes or _nested_location(cand, hashes):
                        return check_member_name(cand, where)
                raise InvalidInput(f"{where}: {file[:200]!r} is not a file in the package")
            appd, declared = tosca_appd.read(doc, inner, read_inner, resolve, swimagedesc,
                                             sid_where, shown)
            appd_format = "TOSCA"
        elif zipped_appd:
            raise layout_error(f"{appd_path} (a zipped APPD) holds {inner}, which is not a "
                               "TOSCA service template (no tosca_definitions_version)")
        else:
            appd, appd_format = doc, "MEC 010-2"
        info = appd_mod.validate_appd(appd)
        image, nested = _image(zf, info["sw_image"], info["manner"], hashes, declared, work,
                               limits)
        images = [image]
        for other in info["images"][1:]:    # a dual-format app's image of the other manner
            more, inside = _image(zf, other["sw_image"], other["manner"], hashes, None, work,
                                  limits)
            if inside:
                raise InvalidInput("swImageDescriptor[1].swImage: the second image of a "
                                   "dual-format app must be a file of the package, not "
                                   "inside a zip")
            images.append(more)
    return Package(path=path, sha256=sha256_file(path), files=tuple(files), hashes=hashes,
                   tosca_meta=meta, manifest=manifest, manifest_metadata=metadata,
                   signed=signed, signature_verified=verified, appd_path=appd_path,
                   appd=appd, app_d_id=info["app_d_id"], manner=info["manner"],
                   image=image, compute=info["compute"], storage=tuple(info["storage"]),
                   limits=limits, layout=layout, appd_format=appd_format,
                   image_nested=nested, images=tuple(images))
