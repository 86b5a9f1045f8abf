"""Application packages: build, open and verify (ETSI SOL004 in spirit).

A package is a zip holding `TOSCA-Metadata/TOSCA.meta` (whose
Entry-Definitions names the AppD and ETSI-Entry-Manifest the manifest), the
AppD (YAML, ETSI MEC 010-2 field names), a manifest with one
Source/Algorithm/Hash entry per file, an optional signature of the manifest
and the artifacts (software images). See meta.py for the file formats,
build.py for the source folder layout, reader.py for the checks and the
other layouts read (SOL004 without ETSI-Entry-Manifest, EdgeGallery-style
CSARs), tosca_appd.py for TOSCA AppDs, convert.py for rewriting any of them
in mecorch's own layout.
"""

from mecorch.package.appd import ImageInfo, validate_appd
from mecorch.kernel.fileutil import sha256_file
from mecorch.package.archive import DEFAULT_LIMITS, ArchiveLimits
from mecorch.package.build import APPD_PATH, ARTIFACTS_FILE, build_package
from mecorch.package.convert import convert_package
from mecorch.package.reader import Package, open_package
from mecorch.package.schema import NFV_SCHEMAS

__all__ = ["APPD_PATH", "ARTIFACTS_FILE", "ArchiveLimits", "DEFAULT_LIMITS", "ImageInfo",
           "NFV_SCHEMAS", "Package", "build_package", "convert_package", "open_package", "sha256_file",
           "validate_appd"]
