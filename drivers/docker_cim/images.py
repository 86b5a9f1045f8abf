"""The container image repository: the registry holds the bytes, the
catalog (`<state_dir>/container-images.json`) holds what mecorch decided
about them (available or not, and the manifest digest at import).

An image is deployable only when the registry has it, the catalog marks it
available, and the registry's digest is still the one recorded: a tag moved
behind mecorch's back is an IntegrityError, not a silent swap.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

from mecorch.kernel import validate
from mecorch.driverapi.catalog import ImageCatalog
from mecorch.kernel.errors import (
    BackendError, ImageNotFound, ImageUnavailable, IntegrityError, InvalidInput, MecorchError)

from .backend import backend_errors, drain, gone_ok
from .registry import Registry


class ImageRepository:
    def __init__(self, registry_host: str, catalog: ImageCatalog, client: Callable):
        self.registry_host = registry_host
        self.registry = Registry(registry_host)
        self.catalog = catalog
        self.client = client            # the driver's lazy docker client

    def _split(self, image) -> tuple[str, str, str]:
        ref = validate.image_ref(image)
        if "@" in ref:
            raise InvalidInput("image: give a tag, not a digest (mecorch pins the digest itself)")
        host, repo, tag = validate.split_image_ref(ref)
        return host, repo, tag

    def _digest(self, ref: str, repo: str, tag: str) -> str | None:
        with backend_errors(f"image {ref}: registry {self.registry_host}"):
            return self.registry.digest(repo, tag)

    def check(self, image: str) -> dict:
        host, repo, tag = self._split(image)
        if host != self.registry_host:
            raise ImageNotFound(f"image {image}: not in the container image repository "
                                f"{self.registry_host} (it names {host or 'Docker Hub'})")
        digest = self._digest(image, repo, tag)
        if digest is None:
            raise ImageNotFound(f"image {image} is not in the container image repository "
                                f"{self.registry_host}")
        record = self.catalog.get(image)
        if not record or not record.get("available"):
            why = "marked unavailable" if record else "never imported or marked available"
            raise ImageUnavailable(f"image {image} is in the repository but not available "
                                   f"for deployment ({why})")
        if record.get("digest") and record["digest"] != digest:
            raise IntegrityError(f"image {image}: the registry now holds {digest}, not the "
                                 f"{record['digest']} mecorch recorded")
        return {**record, "digest": digest}

    def set_available(self, image: str, available: bool) -> None:
        host, repo, tag = self._split(image)
        if not isinstance(available, bool):
            raise InvalidInput("available: must be true or false")
        record = self.catalog.get(image)
        digest = self._digest(image, repo, tag) if host == self.registry_host else None
        if digest is None and (available or record is None):
            raise ImageNotFound(f"image {image} is not in the container image repository "
                                f"{self.registry_host}")
        # Keep the digest recorded at import: check_image compares with it.
        self.catalog.put(image, available=available,
                         digest=(record or {}).get("digest") or digest)

    def import_tar(self, image: str, source: str, sha256: str | None = None) -> dict:
        host, repo, tag = self._split(image)
        if host != self.registry_host:
            raise InvalidInput(f"image: must name the repository {self.registry_host}/...")
        want = validate.sha256(sha256) if sha256 is not None else None
        path = validate.text(source, "source", 4096)
        if not os.path.isfile(path):
            raise InvalidInput(f"source: {path} is not a file")
        actual = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    actual.update(block)
        except OSError as e:
            raise InvalidInput(f"source: cannot read {path} ({e.strerror})") from None
        if want and actual.hexdigest() != want:
            raise IntegrityError(f"source {path}: SHA-256 is {actual.hexdigest()}, "
                                 f"expected {want}")
        api = self.client()
        with open(path, "rb") as f:
            with backend_errors(f"docker load {path}"):
                lines = drain(f"docker load {path}", api.load_image(f))
        # "Loaded image: name:tag" per tag, or "Loaded image ID: sha256:..."
        names = [s.split(":", 1)[1].strip() for s in (ln.get("stream", "") for ln in lines)
                 if s.startswith("Loaded image")]
        with backend_errors(f"inspect the images loaded from {path}"):
            ids = {api.inspect_image(n)["Id"] for n in names}
        if len(ids) != 1:
            raise InvalidInput(f"source {path}: a docker save tar with exactly one image is "
                               f"needed, it holds {len(ids)}")
        name = f"{host}/{repo}"
        with backend_errors(f"tag {names[0]} as {image}"):
            api.tag(ids.pop(), name, tag, force=True)
        try:
            with backend_errors(f"push {image}"):
                drain(f"push {image}", api.push(name, tag, stream=True, decode=True))
        finally:
            # The registry is the repository; the local tag was only the
            # vehicle of the push (deploys pull by digest). Best effort: a
            # failure here must not hide the push's own outcome.
            try:
                gone_ok(f"untag {image}", api.remove_image, image)
            except MecorchError:
                pass
        digest = self._digest(image, repo, tag)
        if digest is None:
            raise BackendError(f"push {image}: the registry does not show it after the push")
        return self.catalog.put(image, available=True, digest=digest,
                                sha256=actual.hexdigest(), source=path)

    def remove(self, image: str) -> None:
        host, repo, tag = self._split(image)
        if host == self.registry_host:
            digest = self._digest(image, repo, tag)
            if digest:
                with backend_errors(f"delete {image} from registry {self.registry_host}"):
                    self.registry.delete(repo, digest)
        self.catalog.remove(image)
