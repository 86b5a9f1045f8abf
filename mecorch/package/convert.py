"""convert_package: any layout mecorch reads -> mecorch's own.

The source package is opened with every check open_package makes (its
manifest, signature when a trusted key is given, archive limits, nested
zips, AppD), then rebuilt by build_package: a SOL004 CSAR with
ETSI-Entry-Manifest, the AppD in MEC 010-2 field names at
Definitions/appd.yaml and each image file, unzipped, under Artifacts/ with
its SHA-256 as swImageDescriptor.checksum. Files of the source that are not
the AppD or an image (charts, docs, change logs) are not carried over: the
converted package holds what mecorch deploys. Nothing is left behind on a
failure (the work folder is temporary; the zip is written atomically).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

import yaml

from mecorch.kernel.errors import InvalidInput
from mecorch.package.build import APPD_PATH, build_package
from mecorch.package.reader import open_package


class _PlainDumper(yaml.SafeDumper):
    """No anchors/aliases in the written AppD, even where the source AppD
    shares one object between two places (readers count aliases)."""

    def ignore_aliases(self, data):
        return True


def _artifact_name(image_path: str, taken: set[str]) -> str:
    base = posixpath.basename(image_path) or "image"
    stem, ext = posixpath.splitext(base)
    name, n = f"Artifacts/{base}", 1
    while name in taken:
        n += 1
        name = f"Artifacts/{stem}-{n}{ext}"
    taken.add(name)
    return name


def convert_package(src_zip: str | os.PathLike, out_zip: str | os.PathLike,
                    signing_key: str | os.PathLike | bytes | None = None,
                    trusted_key: str | os.PathLike | bytes | None = None) -> Path:
    """Rewrite the package `src_zip` in mecorch's own layout at `out_zip`
    (signed with `signing_key` when given); return its path."""
    src, out = Path(src_zip), Path(out_zip)
    if src.resolve() == out.resolve():
        raise InvalidInput("package convert: the output must not be the input package")
    pkg = open_package(src, trusted_key=trusted_key)
    appd = dict(pkg.appd)
    descriptors = appd["swImageDescriptor"]
    single = not isinstance(descriptors, list)
    descriptors = [dict(d) for d in ([descriptors] if single else descriptors)]
    images = list(pkg.images) or [pkg.image]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".mecorch-convert-") as work:
        folder = Path(work) / "src"
        (folder / "Definitions").mkdir(parents=True)
        taken: set[str] = set()
        for sw, image in zip(descriptors, images):
            if image.path is None:
                continue                # a registry reference stays one
            name = _artifact_name(image.path, taken)
            pkg.extract(image.path, folder / name)
            sw["swImage"] = name
            sw["checksum"] = image.sha256
        appd["swImageDescriptor"] = descriptors[0] if single else descriptors
        header = (f"# AppD converted by `mecorch package convert` from {src.name} "
                  f"({pkg.layout} layout, {pkg.appd_format} AppD)\n")
        (folder / APPD_PATH).write_text(
            header + yaml.dump(appd, Dumper=_PlainDumper, sort_keys=False,
                               allow_unicode=True),
            encoding="utf-8")
        return build_package(folder, out, signing_key=signing_key)
