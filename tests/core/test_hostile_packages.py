"""Hostile packages in the layouts of issue 18: zip bombs inside nested
zips (the zipped APPD, the zipped image), path traversal in nested
archives and in the paths the descriptors give, and TOSCA AppDs (and the
files they import) with YAML anchors, aliases, merge keys and tags. Each
is refused with one message before anything of it is used, and leaves
nothing behind (no temporary files, nothing written outside)."""

from __future__ import annotations

import io
import json
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from support import pkglayouts as L
from mecorch.kernel.errors import IntegrityError, InvalidInput, PayloadTooLarge
from mecorch.package import ArchiveLimits, open_package
from support.packages import fake_docker_tar

APPD = "Definition/MainServiceTemplate.yaml"


def eg(tmp: Path, change_files=None, change_appd_zip=None, change_image_zip=None,
       appd_text: bytes | None = None, checksum=None) -> Path:
    """An EdgeGallery-style CSAR whose parts a test replaces."""
    image = fake_docker_tar(tmp / "img")
    files = L.edgegallery_files("container", "h", image, "10.90.0.231", checksum=checksum,
                                appd=appd_text)
    for name, change in ((f"APPD/h.zip", change_appd_zip), ("Image/h.zip", change_image_zip)):
        if change:
            with zipfile.ZipFile(io.BytesIO(files[name])) as zf:
                inner = [(i, zf.read(i)) for i in zf.infolist()]
            files[name] = change(inner)
    if change_files:
        change_files(files)
    return L.edgegallery(tmp / "h.zip", "container", "h", image, "10.90.0.231", files=files)


def zip_of(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def with_member(name, data, compression=zipfile.ZIP_DEFLATED):
    """A change adding one member to a nested zip."""
    def change(inner):
        return zip_of([(i.filename, d) for i, d in inner] + [(name, data)], compression)
    return change


def renamed(old: str, new: str):
    def change(inner):
        return zip_of([(new if i.filename == old else i.filename, d) for i, d in inner])
    return change


def symlink_member(name: str):
    def change(inner):
        link = zipfile.ZipInfo(name)
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        return zip_of([(i.filename, d) for i, d in inner] + [(link, b"/etc/shadow")])
    return change


def overlapping(inner):
    raw = bytearray(zip_of([(i.filename, d) for i, d in inner] + [("z1", b"A" * 100)],
                           zipfile.ZIP_STORED))
    cd = raw.rfind(b"PK\x01\x02")                   # the last central record
    raw[cd + 42:cd + 46] = (0).to_bytes(4, "little")  # points at the first member's data
    return bytes(raw)


def image_desc(**fields):
    def change(files):
        desc = json.loads(files["Image/SwImageDesc.json"])
        desc[0].update(fields)
        files["Image/SwImageDesc.json"] = json.dumps(desc).encode()
    return change


def appd_with(text: str) -> bytes:
    """A valid EdgeGallery AppD with `text` appended (a top-level key)."""
    return L.eg_appd("container", "h", "h:1.0", "10.90.0.231") + text.encode()


BOMB = b"\0" * (20 << 20)        # 20 MiB of zeros: deflates about 1000:1

HOSTILE = {
    # zip bombs inside nested zips
    "ratio bomb in the zipped image": (
        lambda t: eg(t, change_image_zip=with_member("h/pad.bin", BOMB)), PayloadTooLarge,
        r"Image/h.zip: archive member 'h/pad.bin' expands 20971520 bytes .*zip bomb"),
    "ratio bomb in the zipped APPD": (
        lambda t: eg(t, change_appd_zip=with_member("Definition/pad.yaml", BOMB)),
        PayloadTooLarge, r"APPD/h.zip: archive member 'Definition/pad.yaml' expands"),
    "too many entries in a nested zip": (
        lambda t: eg(t, change_image_zip=lambda inner: zip_of(
            [(i.filename, d) for i, d in inner] + [(f"h/{n}", b"") for n in range(1001)])),
        PayloadTooLarge, "Image/h.zip has 1002 entries, more than the limit of 1000"),
    "overlapping members in a nested zip": (
        lambda t: eg(t, change_image_zip=overlapping), InvalidInput, "Image/h.zip: .*overlap"),
    "a zip inside the zipped image": (
        lambda t: eg(t, change_image_zip=with_member("h/more.zip", zip_of([("x", b"x")])),
                     change_files=image_desc(swImage="Image/h.zip/h/more.zip")),
        InvalidInput, "zipped more than one level deep is not read"),
    "an image path through a zip inside the zip": (
        lambda t: eg(t, change_image_zip=with_member("h/more.zip", zip_of([("a.tar", b"x")])),
                     change_files=image_desc(swImage="Image/h.zip/h/more.zip/a.tar")),
        InvalidInput, "'h/more.zip/a.tar' is not a file in Image/h.zip"),
    "many small files in the zipped APPD": (
        lambda t: eg(t, change_appd_zip=lambda inner: zip_of(
            [(i.filename, d) for i, d in inner]
            + [(f"Definition/x{n}.yaml", b"a: 1\n" * 200000) for n in range(5)])),
        None, None),        # not refused: never read (not imported), never expanded
    # path traversal in nested archives and in the descriptors' paths
    "'..' member in the zipped image": (
        lambda t: eg(t, change_image_zip=with_member("../../etc/cron.d/h", b"* * * * * x")),
        InvalidInput, r"Image/h.zip: archive member '../../etc/cron.d/h': .*'\.\.'"),
    "absolute member in the zipped APPD": (
        lambda t: eg(t, change_appd_zip=with_member("/etc/passwd", b"x")), InvalidInput,
        r"APPD/h.zip: archive member '/etc/passwd': absolute paths are not allowed"),
    "backslash member in the zipped APPD": (
        lambda t: eg(t, change_appd_zip=with_member("..\\..\\evil.yaml", b"x")), InvalidInput,
        "backslashes are not allowed"),
    "symlink in the zipped image": (
        lambda t: eg(t, change_image_zip=symlink_member("h/link")), InvalidInput,
        "Image/h.zip: archive member 'h/link' is a symbolic link"),
    "the same member twice in a nested zip": (
        lambda t: eg(t, change_image_zip=with_member("h/app.tar", b"again")), InvalidInput,
        "Image/h.zip: archive member 'h/app.tar' appears more than once"),
    "swImage climbing out of the image zip": (
        lambda t: eg(t, change_files=image_desc(swImage="Image/h.zip/../../../etc/passwd")),
        InvalidInput, r"swImage '\.\./\.\./\.\./etc/passwd': .*'\.\.'"),
    "entry definitions climbing out of the zipped APPD": (
        lambda t: eg(t, change_appd_zip=lambda inner: zip_of(
            [(i.filename, d if i.filename != "TOSCA_VNFD.meta" else
              b"Entry-Definitions: ../../../etc/passwd\n") for i, d in inner])),
        InvalidInput, r"TOSCA_VNFD.meta Entry-Definitions '\.\./\.\./\.\./etc/passwd'"),
    "TOSCA artifact file outside the package": (
        lambda t: _sol004_artifact(t, "../../../../etc/passwd"), InvalidInput,
        r"'\.\./\.\./\.\./\.\./etc/passwd' is not a file in the package"),
    # TOSCA with YAML anchors, aliases, merge keys and tags
    "billion laughs in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with(
            "lol: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"l{n}: &a{n} [*{'a' if n == 0 else 'a' + str(n - 1)}] \n"
                      .replace("] ", ", *a]" if n == 0 else "]") for n in range(40)))),
        InvalidInput, "more than 32 aliases"),
    "one anchor in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("x_anchor: &v 1\nx_alias: *v\n")), InvalidInput,
        "line [0-9]+: YAML anchors and aliases are not accepted in a TOSCA AppD"),
    "merge key in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("x_merged:\n  <<: {vnfd_id: other}\n")),
        InvalidInput, "(YAML merge keys|tag:yaml.org,2002:merge)"),
    "python tag in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with(
            "x: !!python/object/apply:os.system ['touch /tmp/mecorch-pwned-by-tosca']\n")),
        InvalidInput, "is not valid YAML"),
    "custom tag in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("x: !Ref DC_ID\n")), InvalidInput,
        "is not valid YAML"),
    "explicit standard tag in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("x: !!str 1\n")), InvalidInput,
        "the YAML tag 'tag:yaml.org,2002:str' is not accepted"),
    "anchor in an imported types file": (
        lambda t: eg(t, change_appd_zip=lambda inner: zip_of(
            [(i.filename, d if not i.filename.endswith("nfv_vnfd_types_v1_0.yaml") else
              d + b"x: &t 1\ny: *t\n") for i, d in inner])),
        InvalidInput, r"import Definition/nfv_vnfd_types_v1_0.yaml line [0-9]+: YAML anchors"),
    "duplicate key in a TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("description: again\n")), InvalidInput,
        "has the key 'description' twice"),
    "deeply nested TOSCA AppD": (
        lambda t: eg(t, appd_text=appd_with("x: " + "[" * 5000 + "]" * 5000 + "\n")),
        InvalidInput, "nested too deeply"),
    "deeply nested SwImageDesc.json": (
        lambda t: eg(t, change_files=lambda f: f.update(
            {"Image/SwImageDesc.json": b"[" * 100000 + b"]" * 100000})),
        InvalidInput, "(nested too deeply|larger than)"),
    "huge SwImageDesc.json": (
        lambda t: eg(t, change_files=lambda f: f.update(
            {"Image/SwImageDesc.json": b"[" + b" " * (300 << 10) + b"]"})),
        InvalidInput, "larger than"),
}


def _sol004_artifact(tmp: Path, file: str) -> Path:
    image = fake_docker_tar(tmp / "img")
    appd = L.mec037_appd("container", "h", file, L.sha(image), "10.90.0.232")
    return L.sol004(tmp / "h.zip", appd, "Artifacts/Images/app.tar", image)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_package_refused(tmp_path, case):
    make, error, match = HOSTILE[case]
    path = make(tmp_path)
    if error is None:
        assert open_package(path).app_d_id == "h"
    else:
        with pytest.raises(error, match=match) as e:
            open_package(path)
        assert "\n" not in e.value.detail
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not Path("/tmp/mecorch-pwned-by-tosca").exists()


def test_nested_zip_expansion_counts_against_the_limit(tmp_path):
    """A nested zip passes the package's limits on its own: here an image
    zip that is small in the package but expands past the total limit."""
    import random
    rnd = random.Random(18)
    # compressible about 2:1, far under the ratio limit, 4 MiB expanded
    data = "".join(f"{rnd.getrandbits(32):08x}\n" for _ in range(466034)).encode()[:4 << 20]
    path = eg(tmp_path, change_image_zip=with_member("h/big.bin", data))
    assert path.stat().st_size < 3 << 20
    with pytest.raises(PayloadTooLarge, match="Image/h.zip: .*expands to .* more than the "
                                               "limit of 3145728"):
        open_package(path, limits=ArchiveLimits(max_total_bytes=3 << 20))
    assert open_package(path).app_d_id == "h"            # within the default limits


def test_image_changed_in_its_zip_after_opening_is_caught(tmp_path):
    """extract() re-checks the nested image against what was verified."""
    path = eg(tmp_path)
    pkg = open_package(path)
    image = fake_docker_tar(tmp_path / "other")[:-1] + b"\1"
    files = L.edgegallery_files("container", "h", image, "10.90.0.231", checksum=None)
    L.edgegallery(path, "container", "h", image, "10.90.0.231", files=files)
    with pytest.raises(IntegrityError):
        pkg.extract(pkg.image.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
