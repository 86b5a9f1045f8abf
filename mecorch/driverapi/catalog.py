"""The image catalog: which images mecorch has put in an image repository,
with their checksum and whether they are available for deployment.

The registry (containers) and the VM image directory (VMs) hold the bytes;
this small JSON index holds what mecorch decided about them. It is written
atomically (temp file + rename) under a lock, so a crash never leaves it
half-written. Both compute drivers use it, each with its own file.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

_lock = threading.Lock()


class ImageCatalog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write(self, data: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".catalog-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, image: str) -> dict | None:
        with _lock:
            return self._read().get(image)

    def put(self, image: str, **record) -> dict:
        """Create or update the record of `image` (fields merged)."""
        with _lock:
            data = self._read()
            entry = data.get(image, {"image": image, "created": time.time()})
            entry.update(record)
            data[image] = entry
            self._write(data)
            return dict(entry)

    def remove(self, image: str) -> None:
        with _lock:
            data = self._read()
            if data.pop(image, None) is not None:
                self._write(data)

    def all(self) -> dict[str, dict]:
        with _lock:
            return self._read()
