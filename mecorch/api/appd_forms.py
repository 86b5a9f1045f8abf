"""The representations of an onboarded package's AppD (GET
/app_pkgm/v1/app_packages/{appPkgId}/appd and
/app_pkgm/v1/onboarded_app_packages/{appDId}/appd).

ETSI GS MEC 010-2 answers the AppD as the package holds it, following NFV-SOL
005's VNFD resource: `text/plain` is the descriptor file itself, for an AppD
that is one file; `application/zip` is a zip of the file or files that make
up the AppD, with what is needed to find its entry point (TOSCA.meta), and
no other file of the package. An AppD of several files (a TOSCA service
template importing files of the package, or an EdgeGallery zipped APPD) is
therefore not available as text/plain: asked for text/plain only, the
answer is a 406; asked for both, the zip. mecorch also answers the AppD as
`application/json` (its parsed, MEC 010-2 shaped AppD: a documented
extension), preferred when the client does not say (no Accept, */*).

The files are read again from the package zip kept since onboarding, which
was verified then (manifest hashes, signature).
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mecorch.kernel.errors import MecorchError, NotFound
from mecorch.kernel.http import NotAcceptable, Response
from mecorch.kernel.yamlsafe import MAX_YAML_BYTES, load_yaml
from mecorch.package.archive import DEFAULT_LIMITS, member_files, open_zip, read_member
from mecorch.package.meta import META_PATH, parse_tosca_meta
from mecorch.package.tosca_appd import MAX_IMPORTS, is_tosca

JSON, TEXT, ZIP = "application/json", "text/plain", "application/zip"
# the media types of the AppD resource, in mecorch's order of preference
APPD_TYPES = (JSON, TEXT, ZIP)
MAX_META_BYTES = 64 << 10
MAX_APPD_ZIP_BYTES = 16 << 20          # as the package reader allows a zipped APPD
# a fixed time in the zip mecorch writes: the same AppD, the same bytes
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class AppdFiles:
    """The AppD as the package holds it: `entry` the descriptor's path in
    the package, `files` the entry and the files it imports (path ->
    bytes), or `zipped` the package's own zip of the AppD (EdgeGallery)."""
    entry: str
    files: dict[str, bytes] = field(default_factory=dict)
    zipped: bytes | None = None
    created_by: str = "mecorch"

    @property
    def single(self) -> bool:
        return self.zipped is None and len(self.files) == 1


def answer(doc: dict, media_types: tuple[str, ...]) -> Response:
    """The AppD of the package record `doc` in the first of `media_types`
    (the negotiated order) it can be given in; 406 if none."""
    forms = None
    for media in media_types:
        if media == JSON:
            return Response(200, doc["_appd"])
        forms = forms or read_appd_files(doc)
        if media == TEXT and forms.single:
            return Response(200, forms.files[forms.entry], content_type=TEXT)
        if media == ZIP:
            return Response(200, as_zip(forms), content_type=ZIP)
    raise NotAcceptable(f"the AppD of app package {doc['id']} is made of several files "
                        f"({forms.entry if forms else '?'} and what it imports): it is "
                        f"available as {ZIP} or {JSON}, not {TEXT}")


def read_appd_files(doc: dict) -> AppdFiles:
    """The AppD files of an onboarded package record, from its zip."""
    zpath = doc.get("_zip")
    if not zpath:
        # No package zip on record (not one mecorch onboarded): all there is
        # of the AppD is its parsed form, given as YAML text of it.
        text = yaml.safe_dump(doc["_appd"], sort_keys=False, allow_unicode=True).encode()
        return AppdFiles("Definitions/appd.yaml", {"Definitions/appd.yaml": text})
    if not Path(zpath).is_file():                     # deleted meanwhile
        raise NotFound(f"app package {doc['id']} has no content any more")
    try:
        with open_zip(Path(zpath), DEFAULT_LIMITS) as zf:
            return _from_package(zf)
    except MecorchError as e:
        # verified at onboarding: a zip that no longer reads is the server's fault
        raise MecorchError(f"app package {doc['id']}: its stored zip can no longer be "
                           f"read ({' '.join(e.detail.split())[:200]})") from None


def _from_package(zf: zipfile.ZipFile) -> AppdFiles:
    meta = parse_tosca_meta(read_member(zf, META_PATH, MAX_META_BYTES, "TOSCA.meta"))
    entry = meta["Entry-Definitions"]
    created_by = meta.get("Created-By", "mecorch")
    if entry.lower().endswith(".zip"):               # EdgeGallery: a zipped APPD
        return AppdFiles(entry, zipped=read_member(zf, entry, MAX_APPD_ZIP_BYTES, "AppD"),
                         created_by=created_by)
    text = read_member(zf, entry, MAX_YAML_BYTES, "AppD")
    files = {entry: text}
    descriptor = load_yaml(text, f"AppD {entry}")
    if is_tosca(descriptor):
        files.update(_imports(zf, descriptor, entry))
    return AppdFiles(entry, files, created_by=created_by)


def _imports(zf: zipfile.ZipFile, descriptor: dict, entry: str) -> dict[str, bytes]:
    """The files of the package a TOSCA service template imports, and
    theirs (as the package reader follows them: relative to the importing
    file; URLs are not files of the package)."""
    members = set(member_files(zf))
    out: dict[str, bytes] = {}
    todo = [(descriptor, entry)]
    while todo:
        cur, cur_path = todo.pop()
        imports = cur.get("imports") if isinstance(cur, dict) else None
        for imp in imports if isinstance(imports, list) else ():
            name = imp.get("file") if isinstance(imp, dict) else imp
            if not isinstance(name, str) or "://" in name:
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(cur_path), name))
            if target in out or target == entry or target not in members \
                    or len(out) >= MAX_IMPORTS:
                continue
            out[target] = read_member(zf, target, MAX_YAML_BYTES, "AppD import")
            todo.append((load_yaml(out[target], f"AppD import {target}"), target))
    return out


def as_zip(forms: AppdFiles) -> bytes:
    """The AppD as a zip: the package's own zip of it (EdgeGallery), else
    its files at their paths in the package, with a TOSCA.meta naming the
    entry. A TOSCA.meta of its own: the package's also names its manifest,
    change log and other files, which are not part of the AppD."""
    if forms.zipped is not None:
        return forms.zipped
    created_by = " ".join(forms.created_by.split())[:128] or "mecorch"
    meta = ("TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\n"
            f"Created-By: {created_by}\nEntry-Definitions: {forms.entry}\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in [(META_PATH, meta.encode()), *sorted(forms.files.items())]:
            out.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()
