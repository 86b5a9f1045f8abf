"""build_package: a package zip from a source folder.

The source folder holds the AppD at `Definitions/appd.yaml` and any other
files to ship (all regular files; names starting with '.' are skipped).
Files too big or too machine-specific to commit (software images) are
named in an optional `artifacts.yaml` at the folder's root and copied in
at build time:

    artifacts:
      - source: /var/cache/mecorch/workloads/sample-http.tar   # absolute, or
        path: Artifacts/sample-http.tar                        # relative to the folder

`artifacts.yaml` itself is not packaged. The builder writes
TOSCA-Metadata/TOSCA.meta, the manifest `<appDId>.mf` and, with a signing
key, `<appDId>.mf.sig`. The zip is deterministic (sorted members, fixed
timestamps and modes, stored uncompressed: images are compressed already
and stored data does not depend on the zlib version) and written
atomically. The release date in the manifest is SOURCE_DATE_EPOCH when
set, else the newest modification time of the inputs, so the same inputs
give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

from mecorch.kernel.fileutil import current_umask, unlink_quietly
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.yamlsafe import MAX_YAML_BYTES, load_yaml
from mecorch.package import appd as appd_mod
from mecorch.kernel.fileutil import sha256_file
from mecorch.package.archive import CHUNK, check_member_name
from mecorch.package.meta import (
    META_PATH, SIGNATURE_SUFFIX, format_manifest, format_tosca_meta, sign_manifest)

APPD_PATH = "Definitions/appd.yaml"
ARTIFACTS_FILE = "artifacts.yaml"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _source_files(src: Path) -> dict[str, Path]:
    """{member name: file} of the folder, minus dot-files and artifacts.yaml."""
    out = {}
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            if (Path(root) / d).is_symlink():
                raise InvalidInput(f"{Path(root) / d} is a symbolic link; name external "
                                   f"files in {ARTIFACTS_FILE} instead")
        for name in sorted(names):
            p = Path(root) / name
            rel = p.relative_to(src).as_posix()
            if name.startswith(".") or rel == ARTIFACTS_FILE:
                continue
            if p.is_symlink() or not p.is_file():
                raise InvalidInput(f"{p} is not a regular file (symbolic links are not "
                                   f"packaged; name external files in {ARTIFACTS_FILE})")
            out[check_member_name(rel, "source file")] = p
    return out


def _artifacts(src: Path) -> dict[str, Path]:
    f = src / ARTIFACTS_FILE
    if not f.exists():
        return {}
    doc = load_yaml(f.read_bytes(), str(f))
    if not isinstance(doc, dict) or set(doc) != {"artifacts"} \
            or not isinstance(doc["artifacts"], list):
        raise InvalidInput(f"{f}: must be a mapping with one key, 'artifacts', a list")
    out = {}
    for i, item in enumerate(doc["artifacts"]):
        if not isinstance(item, dict) or set(item) != {"source", "path"}:
            raise InvalidInput(f"{f}: artifacts[{i}] must have exactly 'source' and 'path'")
        if not isinstance(item["source"], str) or not item["source"]:
            raise InvalidInput(f"{f}: artifacts[{i}].source must be a file path")
        name = check_member_name(item["path"], f"{f}: artifacts[{i}].path")
        source = (src / item["source"]).resolve()
        if not source.is_file():
            raise InvalidInput(f"{f}: artifacts[{i}].source {source} is not a file "
                               "(build or fetch it first)")
        if name in out:
            raise InvalidInput(f"{f}: artifacts path {name} appears twice")
        out[name] = source
    return out


def _release_time(inputs: list[Path]) -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    ts = int(epoch) if epoch and epoch.isdigit() else max(int(p.stat().st_mtime) for p in inputs)
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def _check_appd(src: Path, members: dict[str, Path]) -> dict:
    """Validate the AppD and its image before building, so a bad folder
    fails here rather than at onboarding."""
    appd = load_yaml(members[APPD_PATH].read_bytes(), f"AppD {members[APPD_PATH]}")
    info = appd_mod.validate_appd(appd)
    for image in info["images"]:            # two for a dual-format app
        sw, manner = image["sw_image"], image["manner"]
        kind, where = appd_mod.image_location(sw["swImage"], manner, set(members))
        if kind == "file":
            with open(members[where], "rb") as fh:
                appd_mod.check_image_head(fh.read(512), where, manner, sw["diskFormat"])
            if sw["checksum"] and sw["checksum"] != sha256_file(members[where]):
                raise InvalidInput(f"{where}: SHA-256 does not match swImageDescriptor.checksum")
    return appd


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    zi.create_system = 3                    # unix: the mode below is meaningful
    zi.external_attr = 0o100644 << 16       # regular file, rw-r--r--
    zi.compress_type = zipfile.ZIP_STORED
    zi.file_size = size
    return zi


def _add_file(zf: zipfile.ZipFile, name: str, path: Path, expect: str) -> None:
    """Copy a file in, hashing on the way: a file that changed since the
    manifest was made fails the build instead of making a bad package."""
    h = hashlib.sha256()
    with open(path, "rb") as src, zf.open(_zip_info(name, path.stat().st_size), "w") as out:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != expect:
        raise InvalidInput(f"{path} changed while the package was being built")


def build_package(src_dir: str | os.PathLike, out_zip: str | os.PathLike,
                  signing_key: str | os.PathLike | bytes | None = None) -> Path:
    """Build (and sign, with a PEM Ed25519/RSA private key path or bytes)
    the package of `src_dir` into `out_zip`; return its path."""
    src = Path(src_dir)
    if not src.is_dir():
        raise InvalidInput(f"package source {src} is not a directory")
    members = _source_files(src)
    for name, path in _artifacts(src).items():
        if name in members:
            raise InvalidInput(f"{ARTIFACTS_FILE}: {name} is also a file of the folder")
        members[name] = path
    if APPD_PATH not in members:
        raise InvalidInput(f"package source {src} has no {APPD_PATH}")
    if members[APPD_PATH].stat().st_size > MAX_YAML_BYTES:
        raise InvalidInput(f"{APPD_PATH} is larger than {MAX_YAML_BYTES} bytes")
    for name in members:
        if name.startswith("TOSCA-Metadata/") or ("/" not in name and name.endswith(
                (".mf", ".mf" + SIGNATURE_SUFFIX))):
            raise InvalidInput(f"{src / name}: the builder writes TOSCA-Metadata and the "
                               "manifest; remove it from the source folder")
    appd = _check_appd(src, members)

    manifest = f"{appd['appDId']}.mf"
    texts = {META_PATH: format_tosca_meta(APPD_PATH, manifest).encode()}
    hashes = {name: sha256_file(p) for name, p in members.items()}
    hashes.update({n: hashlib.sha256(t).hexdigest() for n, t in texts.items()})
    metadata = {"app_provider_id": appd["appProvider"], "app_product_name": appd["appName"],
                "app_package_version": appd["appSoftVersion"],
                "app_release_date_time": _release_time(list(members.values()))}
    texts[manifest] = format_manifest(metadata, hashes).encode()
    if signing_key is not None:
        texts[manifest + SIGNATURE_SUFFIX] = sign_manifest(texts[manifest], signing_key)

    out = Path(out_zip)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
                for name in sorted(set(members) | set(texts)):
                    if name in texts:
                        zf.writestr(_zip_info(name, len(texts[name])), texts[name])
                    else:
                        _add_file(zf, name, members[name], hashes[name])
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())   # the user's own file, as `cp` makes it
        os.replace(tmp, out)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return out
