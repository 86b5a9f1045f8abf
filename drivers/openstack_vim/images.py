"""Glance as the VM image repository.

An image `X` of edge host `H` is the Glance image named `mecorch.H.X`,
private, with the properties `mecorch_host`, `mecorch_image` and
`mecorch_sha256` (the package's SHA-256 of the disk). Availability is
Glance's own: an unavailable image is deactivated (Nova refuses to boot it),
made available again by reactivating it.

Integrity: Glance computes `os_hash_value` (with its `os_hash_algo`,
SHA-512 by default) over what it stored. At import the driver hashes the
package's disk itself, checks the package's SHA-256, compares Glance's hash
with its own, and keeps the expected value in a small local record
(`<state_dir>/openstack-images.json`); `check_image` compares Glance's
hash with it, so an image replaced under the same name is refused.
"""

from __future__ import annotations

import hashlib
import os
import struct

from mecorch.kernel import validate
from mecorch.driverapi.catalog import ImageCatalog
from mecorch.kernel.errors import (
    BackendError, ImageNotFound, ImageUnavailable, IntegrityError, InvalidInput, NotFound)

from .errors import os_errors

_CHUNK = 1 << 20
_QCOW2_MAGIC = b"QFI\xfb"


def glance_name(host_id: str, image: str) -> str:
    return f"mecorch.{host_id}.{image}"


def disk_format(path: str) -> str:
    """qcow2 or raw, from the file's header. A qcow2 with a backing file is
    refused: Glance would store an image that cannot boot on its own."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise InvalidInput("image: the disk image is empty")
    if head[:4] == _QCOW2_MAGIC:
        if len(head) < 16 or struct.unpack(">Q", head[8:16])[0] != 0:
            raise InvalidInput("image: qcow2 images with a backing file are refused")
        return "qcow2"
    return "raw"


def _hashes(path: str) -> dict[str, str]:
    """SHA-256 (what packages carry), SHA-512 (Glance's default os_hash_algo)
    and MD5 (Glance's legacy `checksum`), in one read."""
    hs = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512(),
          "md5": hashlib.md5(usedforsecurity=False)}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hs.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hs.items()}


def _prop(img, key: str):
    props = getattr(img, "properties", None) or {}
    return props.get(key, getattr(img, key, None))


class GlanceImages:
    def __init__(self, conn_factory, host_id: str, state_dir):
        self._conn = conn_factory          # a callable: the shared Connection
        self.host_id = host_id
        self.records = ImageCatalog(os.path.join(str(state_dir), "openstack-images.json"))

    def find(self, image: str):
        """The Glance image of `image` on this host, or None."""
        name = glance_name(self.host_id, validate.ident(image, "image"))
        with os_errors(f"look up image {image} in Glance"):
            found = [i for i in self._conn().image.images(name=name)
                     if _prop(i, "mecorch_host") == self.host_id]
        if len(found) > 1:
            raise BackendError(f"image {image}: {len(found)} Glance images are named {name}; "
                               "remove the extra ones")
        return found[0] if found else None

    def import_image(self, image: str, source: str, sha256: str | None) -> dict:
        validate.ident(image, "image")
        if sha256 is not None:
            sha256 = validate.sha256(sha256, "sha256")
        if not isinstance(source, str) or not os.path.isfile(source):
            raise InvalidInput(f"source: {source!r} is not a readable file")
        fmt = disk_format(source)
        local = _hashes(source)
        if sha256 is not None and local["sha256"] != sha256:
            raise IntegrityError(f"image {image}: SHA-256 of {source} is {local['sha256']}, "
                                 f"expected {sha256}")
        conn = self._conn()
        old = self.find(image)
        if old is not None:
            with os_errors(f"replace image {image} in Glance"):
                conn.image.delete_image(old, ignore_missing=True)
        name = glance_name(self.host_id, image)
        img = None
        try:
            with os_errors(f"upload image {image} to Glance"):
                img = conn.image.create_image(
                    name, filename=source, disk_format=fmt, container_format="bare",
                    md5=local["md5"], sha256=local["sha256"], allow_duplicates=True,
                    wait=True, timeout=1800, visibility="private",
                    mecorch_host=self.host_id, mecorch_image=image,
                    mecorch_sha256=local["sha256"])
                img = conn.image.get_image(img.id)
            if img.status != "active":
                raise BackendError(f"image {image}: Glance left it {img.status!r} after upload")
            algo, value = img.hash_algo, img.hash_value
            if algo not in local:
                local[algo] = _hash_with(source, algo)
            if value != local[algo]:
                raise IntegrityError(f"image {image}: Glance's {algo} {value} differs from the "
                                     f"uploaded file's {local[algo]}")
        except BaseException:
            if img is not None:
                try:
                    with os_errors(f"remove the failed upload of {image}"):
                        conn.image.delete_image(img, ignore_missing=True)
                except Exception:      # noqa: BLE001 - the upload's own error matters more
                    pass
            raise
        return self.records.put(image, glance_id=img.id, hash_algo=algo, hash_value=value,
                                sha256=local["sha256"], disk_format=fmt, size=img.size,
                                available=True)

    def set_available(self, image: str, available: bool) -> None:
        img = self.find(image)
        if img is None:
            raise ImageNotFound(f"VM image {image!r} is not in Glance (as {glance_name(self.host_id, image)})")
        with os_errors(f"{'reactivate' if available else 'deactivate'} image {image}"):
            if available and img.status == "deactivated":
                self._conn().image.reactivate_image(img)
            elif not available and img.status == "active":
                self._conn().image.deactivate_image(img)
        self.records.put(image, available=bool(available))

    def remove(self, image: str) -> None:
        img = self.find(image)
        if img is not None:
            try:
                with os_errors(f"delete image {image} from Glance"):
                    self._conn().image.delete_image(img, ignore_missing=True)
            except NotFound:
                pass
        self.records.remove(image)

    def check(self, image: str) -> dict:
        """The record of a deployable image; each failure its own error."""
        img = self.find(image)
        if img is None:
            raise ImageNotFound(f"VM image {image!r} is not in Glance "
                                f"(as {glance_name(self.host_id, image)})")
        if img.status == "deactivated":
            raise ImageUnavailable(f"VM image {image!r} is deactivated in Glance")
        if img.status != "active":
            raise ImageUnavailable(f"VM image {image!r} is {img.status!r} in Glance, not active")
        # Without a local record (a state dir that was lost) there is no
        # package hash to hold Glance's against: Glance's own status stands.
        rec = self.records.get(image) or {}
        want = rec.get("hash_value")
        if want is not None and (rec.get("hash_algo") != img.hash_algo
                                 or img.hash_value != want):
            raise IntegrityError(f"VM image {image!r}: Glance's {img.hash_algo} {img.hash_value} "
                                 f"is not the imported package's {want}")
        return {"image": image, "glance_id": img.id, "status": img.status,
                "hash_algo": img.hash_algo, "hash_value": img.hash_value,
                "sha256": _prop(img, "mecorch_sha256"), "size": img.size,
                "min_disk": img.min_disk or 0, "available": True}


def _hash_with(path: str, algo: str) -> str:
    try:
        h = hashlib.new(algo)
    except ValueError:
        raise IntegrityError(f"Glance hashes with {algo!r}, which this Python lacks") from None
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
