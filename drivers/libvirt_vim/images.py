"""The VM image repository: `<state_dir>/vm-images/<id>.qcow2` files plus an
ImageCatalog record per image (sha256, format, size, available).

Only qcow2 and raw disks are accepted, and a raw upload is converted to
qcow2 so every base image is qcow2. Uploaded images must not have a backing
file or an external data file: either could point anywhere on the host.
Everything is verified on a temporary copy inside the repository directory
and published with a rename, so a rejected upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from mecorch.kernel import validate
from mecorch.driverapi.catalog import ImageCatalog
from mecorch.kernel.fileutil import sha256_file, unlink_quietly
from mecorch.kernel.errors import (
    BackendError, ImageNotFound, ImageUnavailable, IntegrityError, InvalidInput)

FORMATS = ("qcow2", "raw")
_CHUNK = 1 << 20


def qemu_img_info(path: str | os.PathLike) -> dict:
    """`qemu-img info --output=json` of a file; InvalidInput if it is not a
    disk image qemu-img can read."""
    try:
        out = subprocess.run(["qemu-img", "info", "--output=json", "--", str(path)],
                             capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BackendError("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise InvalidInput("image: qemu-img info timed out") from None
    if out.returncode != 0:
        raise InvalidInput(f"image: not a readable disk image: {out.stderr.strip()[:300]}")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise BackendError("qemu-img info returned unreadable JSON") from None


def check_disk_info(info: dict) -> str:
    """The format of an uploaded image, refusing what mecorch will not boot."""
    fmt = info.get("format")
    if fmt not in FORMATS:
        raise InvalidInput(f"image: format {fmt!r} is not supported (qcow2 or raw)")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise InvalidInput("image: images with a backing file are refused "
                           "(it could point to any file on the host)")
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if data_file:
        raise InvalidInput("image: qcow2 images with an external data file are refused")
    if not isinstance(info.get("virtual-size"), int) or info["virtual-size"] <= 0:
        raise InvalidInput("image: the image has no virtual size")
    return fmt


class VMImageRepo:
    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir) / "vm-images"
        self.catalog = ImageCatalog(Path(state_dir) / "vm-images.json")

    def path(self, image: str) -> Path:
        return self.dir / f"{validate.ident(image, 'image')}.qcow2"

    def import_image(self, image: str, source: str, sha256: str | None = None) -> dict:
        target = self.path(image)
        if sha256 is not None:
            sha256 = validate.sha256(sha256, "sha256")
        if not isinstance(source, str) or not os.path.isfile(source):
            raise InvalidInput(f"source: {source!r} is not a readable file")
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".import-")
        try:
            # Hash while copying: what is verified is exactly what is kept.
            h = hashlib.sha256()
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            source_sha = h.hexdigest()
            if sha256 is not None and source_sha != sha256:
                raise IntegrityError(f"image {image}: SHA-256 of {source} is {source_sha}, "
                                     f"expected {sha256}")
            info = qemu_img_info(tmp)
            fmt = check_disk_info(info)
            if fmt == "raw":
                self._convert_to_qcow2(tmp)
            stored_sha = source_sha if fmt == "qcow2" else sha256_file(tmp)
            os.chmod(tmp, 0o600)         # read by mecorch only (uploaded into the pool)
            os.replace(tmp, target)
        except BaseException:
            unlink_quietly(tmp)
            raise
        st = target.stat()
        return self.catalog.put(
            image, sha256=stored_sha, source_sha256=source_sha, source_format=fmt,
            format="qcow2", size=st.st_size, virtual_size=info["virtual-size"],
            available=True, verified={"size": st.st_size, "mtime_ns": st.st_mtime_ns})

    @staticmethod
    def _convert_to_qcow2(path: str) -> None:
        out = f"{path}.qcow2"
        try:
            proc = subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                                   "--", path, out], capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise BackendError(f"qemu-img convert failed: {proc.stderr.strip()[:300]}")
            os.replace(out, path)
        finally:
            if os.path.exists(out):
                os.unlink(out)

    def set_available(self, image: str, available: bool) -> None:
        if self.catalog.get(validate.ident(image, "image")) is None:
            raise ImageNotFound(f"VM image {image!r} is not in the repository")
        self.catalog.put(image, available=bool(available))

    def remove(self, image: str) -> None:
        path = self.path(image)
        self.catalog.remove(image)
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def check(self, image: str) -> dict:
        """The record of a deployable image; each failure its own error."""
        path = self.path(image)
        record = self.catalog.get(image)
        if record is None or not path.is_file():
            raise ImageNotFound(f"VM image {image!r} is not in the repository")
        if not record.get("available"):
            raise ImageUnavailable(f"VM image {image!r} is marked unavailable")
        st = path.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        # Rehash only when the file changed since it was last verified.
        if record.get("verified") != stamp:
            actual = sha256_file(path)
            if actual != record.get("sha256"):
                raise IntegrityError(f"VM image {image!r}: SHA-256 of the repository copy is "
                                     f"{actual}, the record says {record.get('sha256')}")
            record = self.catalog.put(image, verified=stamp)
        return record
