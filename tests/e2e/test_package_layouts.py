"""Package layouts from the wider MEC/NFV world (issue 18): SOL004 CSARs
with and without ETSI-Entry-Manifest, MEC 010-2 and TOSCA AppDs,
EdgeGallery-style CSARs with a zipped APPD and zipped images described by
Image/SwImageDesc.json, and `mecorch package convert`.

Every layout is written here from its published description
(tests/support/pkglayouts.py). The first part opens them with the reader alone;
the second onboards, deploys (as a container and as a VM), reaches and
terminates them on the real backends through a `mecorch serve` of its own,
and refuses every malformed variant with one message, keeping nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from support import pkglayouts as L
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import IntegrityError, InvalidInput
from mecorch.package import convert_package, open_package
from mecorch.kernel.states import DeploymentType
from support.packages import fake_docker_tar, fake_qcow2

LAYOUTS = ("sol004-mec", "sol004-tosca", "pre26-mec", "pre26-tosca", "edgegallery")
KINDS = ("container", "vm")


def image_member(kind: str) -> str:
    return "Artifacts/Images/app.tar" if kind == "container" else "Artifacts/Images/app.qcow2"


def build(tmp: Path, layout: str, kind: str, image: bytes, app: str, vip: str,
          version: str = "1.0") -> Path:
    """A package of `layout` for `app` around `image`."""
    out = tmp / f"{app}-{layout}-{kind}-{version}.zip"
    member = image_member(kind)
    if layout == "edgegallery":
        return L.edgegallery(out, kind, app, image, vip, version)
    if layout.endswith("-mec"):
        appd = L.mec_appd(kind, app, member, vip, version)
    else:   # the artifact file is relative to the template (Definitions/)
        appd = L.mec037_appd(kind, app, "../" + member, L.sha(image), vip, version)
    return L.sol004(out, appd, member, image, entry_manifest=layout.startswith("sol004"))


def fake_image(tmp: Path, kind: str) -> bytes:
    return (fake_docker_tar if kind == "container" else fake_qcow2)(tmp / f"img-{kind}")


# -- the reader ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_opens_to_the_same_app(tmp_path, layout, kind):
    image = fake_image(tmp_path, kind)
    pkg = open_package(build(tmp_path, layout, kind, image, "lay-app", "10.90.0.201"))
    assert pkg.layout == {"sol004": "SOL004", "pre26": "SOL004-pre-2.6",
                          "edgegallery": "EdgeGallery"}[layout.split("-")[0]]
    assert pkg.appd_format == ("MEC 010-2" if layout.endswith("-mec") else "TOSCA")
    assert pkg.app_d_id == "lay-app"
    assert pkg.appd["appDVersion"] == "1.0" and pkg.appd["appSoftVersion"] == "1.0"
    assert pkg.manner is (DeploymentType.CONTAINER if kind == "container" else DeploymentType.VM)
    assert pkg.image.sha256 == L.sha(image) and pkg.image.size == len(image)
    # the rules, whatever their spelling in the source, are MEC 010-2's
    assert pkg.appd["appDNSRule"][0]["ipAddress"] == "10.90.0.201"
    rule = pkg.appd["appTrafficRule"][0]
    assert rule["trafficFilter"][0]["dstAddress"] == ["10.90.0.201"]
    assert rule["dstInterface"] == [{"interfaceType": "IP"}]
    if kind == "container":
        want = {"sol004-mec": 0.5, "pre26-mec": 0.5}.get(layout, 0.5 if "tosca" in layout else 1)
        assert pkg.compute == {"vcpu": want, "memory_mb": 64}
    else:
        assert pkg.compute == {"vcpu": 1.0, "memory_mb": 256}
        if layout != "edgegallery":
            assert pkg.storage[0]["size_gb"] == 1.0
    out = tmp_path / "extracted"
    pkg.extract(pkg.image.path, out)
    assert out.read_bytes() == image
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_edgegallery_image_descriptor_and_nesting_are_read(tmp_path):
    image = fake_image(tmp_path, "vm")
    pkg = open_package(L.edgegallery(tmp_path / "eg.zip", "vm", "eg", image, "10.90.0.202"))
    assert pkg.image.path == "Image/eg.zip/eg/app.qcow2"
    assert pkg.image_nested == ("Image/eg.zip", "eg/app.qcow2")
    assert (pkg.image.container_format, pkg.image.disk_format) == ("BARE", "QCOW2")
    assert pkg.appd["mecVersion"] == ["unspecified"]        # EdgeGallery states none
    assert pkg.appd["appDescription"] == "eg app"
    assert pkg.manifest == "eg.mf"
    # the imported types file resolved the custom compute type
    assert pkg.appd["virtualComputeDescriptor"]["virtualComputeDescId"] == "logic0"


def test_pre26_manifest_is_the_only_root_mf_when_not_named_like_the_entry(tmp_path):
    image = fake_image(tmp_path, "container")
    appd = L.mec_appd("container", "pre", image_member("container"), "10.90.0.203")
    pkg = open_package(L.sol004(tmp_path / "p.zip", appd, image_member("container"), image,
                                entry_manifest=False, manifest_name="whatever.mf",
                                list_meta=False))
    assert pkg.manifest == "whatever.mf" and pkg.layout == "SOL004-pre-2.6"


def test_tosca_meta_listed_in_the_manifest_is_checked(tmp_path):
    image = fake_image(tmp_path, "container")
    files = L.edgegallery_files("container", "eg", image, "10.90.0.204")
    md = {"app_product_name": "eg"}
    files["eg.mf"] = L.manifest(files, md)                  # lists TOSCA.meta too
    files[L.META] = files[L.META] + b"\n"                   # ... then it changes
    with pytest.raises(IntegrityError, match="TOSCA.meta: SHA-256 does not match"):
        open_package(L.write_zip(tmp_path / "eg.zip", files))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ("edgegallery", "pre26-tosca"))
def test_convert_writes_mecorchs_own_layout(tmp_path, layout, kind):
    image = fake_image(tmp_path, kind)
    src = build(tmp_path, layout, kind, image, "conv", "10.90.0.205")
    out = convert_package(src, tmp_path / "converted.zip")
    before, after = open_package(src), open_package(out)
    assert after.layout == "SOL004" and after.appd_format == "MEC 010-2"
    assert after.tosca_meta["ETSI-Entry-Manifest"] == "conv.mf"
    assert (after.app_d_id, after.manner, after.compute, after.storage) == \
        (before.app_d_id, before.manner, before.compute, before.storage)
    assert after.image.sha256 == before.image.sha256 == L.sha(image)
    assert after.appd["swImageDescriptor"]["checksum"] == L.sha(image)
    assert after.appd["appTrafficRule"] == before.appd["appTrafficRule"]
    assert sorted(after.files) == sorted(["TOSCA-Metadata/TOSCA.meta", "Definitions/appd.yaml",
                                          "conv.mf", after.image.path])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_command_line(tmp_path):
    image = fake_image(tmp_path, "container")
    src = build(tmp_path, "edgegallery", "container", image, "cli", "10.90.0.206")
    r = subprocess.run([sys.executable, "-m", "mecorch.cli", "package", "convert", str(src),
                        "--zip", str(tmp_path / "out.zip")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "out.zip")
    assert open_package(tmp_path / "out.zip").app_d_id == "cli"
    r = subprocess.run([sys.executable, "-m", "mecorch.cli", "package", "convert",
                        str(tmp_path / "nothing.zip")], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a file" in r.stderr and "Traceback" not in r.stderr


# -- malformed variants --------------------------------------------------------------

def _eg(tmp, mutate, kind="container", **kw):
    image = fake_image(tmp, kind)
    files = L.edgegallery_files(kind, "bad", image, "10.90.0.207", **kw)
    mutate(files, image)
    return L.edgegallery(tmp / "bad.zip", kind, "bad", image, "10.90.0.207", files=files)


def _rezip(files, name, change):
    """Replace a zip member of the package by `change(its members)`."""
    import io
    with zipfile.ZipFile(io.BytesIO(files[name])) as zf:
        inner = {n: zf.read(n) for n in zf.namelist()}
    change(inner)
    files[name] = L.zip_bytes(inner, deflate=True)


def _appd_change(change):
    def mutate(files, image):
        def edit(inner):
            doc = yaml.safe_load(inner["Definition/MainServiceTemplate.yaml"])
            change(doc)
            inner["Definition/MainServiceTemplate.yaml"] = L.dump(doc)
        _rezip(files, "APPD/bad.zip", edit)
    return mutate


def _nodes(doc):
    return doc["topology_template"]["node_templates"]


def _desc_change(change):
    def mutate(files, image):
        desc = json.loads(files["Image/SwImageDesc.json"])
        change(desc)
        files["Image/SwImageDesc.json"] = json.dumps(desc).encode()
    return mutate


def _sol004(tmp, layout="pre26-tosca", kind="container", change=None, **kw):
    image = fake_image(tmp, kind)
    member = image_member(kind)
    if layout.endswith("-mec"):
        appd = L.mec_appd(kind, "bad", member, "10.90.0.208")
    else:
        appd = L.mec037_appd(kind, "bad", "../" + member, L.sha(image), "10.90.0.208")
    if change:
        doc = yaml.safe_load(appd)
        change(doc)
        appd = L.dump(doc)
    return L.sol004(tmp / "bad.zip", appd, member, image,
                    entry_manifest=layout.startswith("sol004"), **kw)


def _drop(name):
    def mutate(files, image):
        del files[name]
    return mutate


def _two_mf(tmp):
    image = fake_image(tmp, "container")
    p = _sol004(tmp, extra={"other.mf": b"metadata:\n"}, manifest_name="x.mf")
    del image
    return p


MALFORMED = {
    "no TOSCA.meta": (lambda t: _eg(t, _drop(L.META)), InvalidInput,
                      "layout not recognised: the package has no TOSCA-Metadata/TOSCA.meta"),
    "pre-2.6 without a root manifest": (
        lambda t: _strip_manifest(_sol004(t)), InvalidInput,
        "layout not recognised: .*no .mf manifest at its root"),
    "pre-2.6 with two root manifests, none named like the entry": (
        _two_mf, InvalidInput, "layout not recognised: .*root has 2 .mf files"),
    "zipped APPD without meta or MainServiceTemplate": (
        lambda t: _eg(t, lambda f, i: _rezip(f, "APPD/bad.zip", _rename_main)), InvalidInput,
        "layout not recognised: APPD/bad.zip is a zipped APPD without TOSCA_VNFD.meta"),
    "zipped APPD holding a MEC 010-2 AppD": (
        lambda t: _eg(t, lambda f, i: _rezip(f, "APPD/bad.zip", _mec_inside)), InvalidInput,
        "not a TOSCA service template"),
    "zipped APPD that is not a zip": (
        lambda t: _eg(t, lambda f, i: f.update({"APPD/bad.zip": b"PK not really"})),
        InvalidInput, "APPD/bad.zip: .*not a .*zip archive"),
    "no SwImageDesc.json": (lambda t: _eg(t, _drop("Image/SwImageDesc.json")), InvalidInput,
                            "names 'bad:1.0' but the package has no Image/SwImageDesc.json"),
    "image name not in SwImageDesc.json": (
        lambda t: _eg(t, _desc_change(lambda d: d[0].update(name="other:1.0"))), InvalidInput,
        r"'bad:1.0' is not in Image/SwImageDesc.json \(it lists 'other:1.0'\)"),
    "SwImageDesc.json not JSON": (
        lambda t: _eg(t, lambda f, i: f.update({"Image/SwImageDesc.json": b"[{"})),
        InvalidInput, "Image/SwImageDesc.json is not valid JSON"),
    "SwImageDesc.json with a key twice": (
        lambda t: _eg(t, lambda f, i: f.update({"Image/SwImageDesc.json":
                                                  b'[{"name": "a", "name": "b"}]'})),
        InvalidInput, "the key 'name' appears twice"),
    "placeholder checksum": (
        lambda t: _eg(t, _desc_change(lambda d: d[0].update(checksum="1"))), InvalidInput,
        r"SwImageDesc.json\[0\].checksum: '1' is not a checksum mecorch can check"),
    "wrong MD5 in SwImageDesc.json": (
        lambda t: _eg(t, _desc_change(lambda d: d[0].update(checksum="0" * 32))),
        IntegrityError, "MD5 is [0-9a-f]{32}, the image descriptor says 0{32}"),
    "wrong SHA-256 in SwImageDesc.json": (
        lambda t: _eg(t, _desc_change(lambda d: d[0].update(checksum="0" * 64))),
        IntegrityError, "SHA-256 does not match the image descriptor's checksum"),
    "swImage not in the image zip": (
        lambda t: _eg(t, _desc_change(lambda d: d[0].update(
            swImage="Image/bad.zip/bad/missing.tar"))), InvalidInput,
        "'bad/missing.tar' is not a file in Image/bad.zip"),
    "zipped image of the wrong format": (
        lambda t: _eg(t, lambda f, i: f.update({"Image/bad.zip": L.zip_bytes(
            {"bad/app.tar": b"not a tar" * 100})}), checksum=None), InvalidInput,
        "Image/bad.zip/bad/app.tar is not a tar archive"),
    "file missing from the manifest": (
        lambda t: _unlisted(t), IntegrityError, "Artifacts/extra.txt is not listed"),
    "unknown node type": (
        lambda t: _eg(t, _appd_change(lambda d: _nodes(d).update(
            extra={"type": "tosca.nodes.Database"}))), InvalidInput,
        "node_templates.extra: node type 'tosca.nodes.Database' is not one mecorch reads"),
    "two compute nodes": (
        lambda t: _eg(t, _appd_change(lambda d: _nodes(d).update(logic1=_nodes(d)["logic0"]))),
        InvalidInput, "needs exactly one tosca.nodes.nfv.Vdu.Compute or .* found 2"),
    "no appDId": (
        lambda t: _eg(t, _appd_change(lambda d: (_nodes(d)["Simple_VNF"]["properties"].pop(
            "vnfd_id"), d["metadata"].pop("vnfd_id")))), InvalidInput,
        "descriptor_id or vnfd_id is missing"),
    "two images for the pod": (
        lambda t: _eg(t, _appd_change(lambda d: _nodes(d)["logic0"]["properties"].update(
            sw_image_data={"name": "a:1,b:1"}))), InvalidInput,
        "sw_image_data.name: names 2 images"),
    "import missing from the package": (
        lambda t: _eg(t, _appd_change(lambda d: d.update(imports=["missing_types.yaml"]))),
        InvalidInput, "imports\\[0\\] 'missing_types.yaml' is not a file of the package"),
    "import escaping the package": (
        lambda t: _eg(t, _appd_change(lambda d: d.update(imports=["../../etc/passwd"]))),
        InvalidInput, "points outside the package"),
    "file storage": (
        lambda t: _sol004(t, layout="pre26-tosca", kind="vm", change=lambda d: _nodes(d).update(
            Files={"type": "tosca.nodes.nfv.Vdu.VirtualFileStorage"})), InvalidInput,
        "VirtualFileStorage is not supported"),
    "bad traffic rule action in a TOSCA AppD": (
        lambda t: _sol004(t, change=lambda d: _nodes(d)["App"]["properties"][
            "app_traffic_rule"][0].update(action="EXPLODE")), InvalidInput,
        r"appTrafficRule\[0\].action: 'EXPLODE' is not one of"),
    "wrong SHA-256 on a TOSCA image artifact": (
        lambda t: _sol004(t, change=lambda d: _nodes(d)["Vdu"]["artifacts"]["sw_image"][
            "properties"]["checksum"].update(hash="1" * 64)), IntegrityError,
        "SHA-256 does not match swImageDescriptor.checksum"),
    "TOSCA image artifact not in the package": (
        lambda t: _sol004(t, change=lambda d: _nodes(d)["Vdu"]["artifacts"]["sw_image"]
                          .update(file="../Artifacts/nope.tar")), InvalidInput,
        "artifacts.sw_image.file: '../Artifacts/nope.tar' is not a file in the package"),
    "container node without resources": (
        lambda t: _sol004(t, change=lambda d: _nodes(d)["Vdu"]["properties"].pop(
            "requested_memory_resources")), InvalidInput,
        "requested_memory_resources .* are required"),
}


def _rename_main(inner):
    del inner["TOSCA_VNFD.meta"]
    inner["Definition/Main.yaml"] = inner.pop("Definition/MainServiceTemplate.yaml")


def _mec_inside(inner):
    inner["Definition/MainServiceTemplate.yaml"] = L.mec_appd(
        "container", "bad", "Artifacts/x.tar", "10.90.0.209")


def _strip_manifest(path: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if not n.endswith(".mf")}
    return L.write_zip(path, files)


def _unlisted(tmp):
    path = _eg(tmp, lambda f, i: None)
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["Artifacts/extra.txt"] = b"x"
    return L.write_zip(path, files)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_variant_is_refused_with_one_message(tmp_path, case):
    make, error, match = MALFORMED[case]
    with pytest.raises(error, match=match):
        open_package(make(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_layout_error_names_the_layouts_mecorch_reads(tmp_path):
    with pytest.raises(InvalidInput) as e:
        open_package(_strip_manifest(_sol004(tmp_path)))
    for layout in ("SOL004 CSAR with ETSI-Entry-Manifest", "SOL004 CSAR without it",
                   "EdgeGallery-style CSAR"):
        assert layout in e.value.detail


# -- on the real backends ---------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    with L.lab("lay") as lab:
        yield lab


@pytest.fixture(scope="module")
def images(sample_container, sample_vm):
    return {"container": Path(sample_container["tar"]).read_bytes(),
            "vm": Path(sample_vm["path"]).read_bytes()}


VIPS = {("sol004-tosca", "container"): "10.90.0.211", ("sol004-tosca", "vm"): "10.90.0.212",
        ("pre26-mec", "container"): "10.90.0.213", ("pre26-mec", "vm"): "10.90.0.214",
        ("edgegallery", "container"): "10.90.0.215", ("edgegallery", "vm"): "10.90.0.216",
        ("converted", "container"): "10.90.0.217"}
BODY = {"container": "mecorch sample container", "vm": "mecorch sample vm"}


def _deploy_reach_terminate(lab, app: str, kind: str, vip: str) -> None:
    c = lab["c"]
    info, op = L.deploy(c, lab["host"], app)
    assert op["operationState"] == "COMPLETED", (op.get("error"), lab["log"].read_text()[-3000:])
    iid = info["id"]
    assert info["deploymentType"] == ("CONTAINER" if kind == "container" else "VM")
    ip = info["allocatedResources"]["network"][0]["ip"]
    assert L.http(f"http://{ip}/") == BODY[kind]                  # the instance itself
    assert L.dig(lab["dns_port"], f"{app}.mec.local") == vip        # the AppD's DNS rule
    assert L.http(f"http://{vip}/") == BODY[kind]                   # its traffic rule
    assert L.terminate(c, iid)["operationState"] == "COMPLETED"
    assert L.leftovers(iid) == []
    assert L.dig(lab["dns_port"], f"{app}.mec.local") == ""
    c.call("DELETE", f"{L.INST}/{iid}")


@pytest.mark.docker
@pytest.mark.libvirt
@pytest.mark.mep
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ("sol004-tosca", "pre26-mec", "edgegallery"))
def test_layout_onboarded_deployed_and_terminated_for_real(lab, images, tmp_path, layout, kind):
    app = f"lay-{layout.split('-')[0]}-{kind}"
    vip = VIPS[(layout, kind)]
    pkg = L.onboard(lab["c"], build(tmp_path, layout, kind, images[kind], app, vip))
    assert pkg["appDId"] == app and pkg["onboardingState"] == "ONBOARDED"
    _deploy_reach_terminate(lab, app, kind, vip)


@pytest.mark.docker
@pytest.mark.mep
def test_converted_edgegallery_package_deploys_for_real(lab, images, tmp_path):
    vip = VIPS[("converted", "container")]
    src = L.edgegallery(tmp_path / "eg.zip", "container", "lay-conv", images["container"], vip)
    out = convert_package(src, tmp_path / "converted.zip")
    pkg = L.onboard(lab["c"], out)
    assert pkg["appDId"] == "lay-conv"
    _deploy_reach_terminate(lab, "lay-conv", "container", vip)


def _state_files(lab) -> list[str]:
    return sorted(str(p.relative_to(lab["tmp"])) for p in (lab["tmp"] / "state").rglob("*")
                  if p.is_file() and "packages" in p.parts)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_variant_onboarding_refused_nothing_kept(lab, tmp_path, case):
    c = lab["c"]
    make, error, match = MALFORMED[case]
    path = make(tmp_path)
    before, files_before = c.get_all(L.PKGS), _state_files(lab)
    with pytest.raises(ApiError) as e:
        L.onboard(c, path)
    assert e.value.status == (422 if error is IntegrityError else 400), e.value.body
    assert len([line for line in e.value.detail.splitlines() if line.strip()]) == 1
    import re
    assert re.search(match, e.value.detail), e.value.detail
    assert c.get_all(L.PKGS) == before
    assert _state_files(lab) == files_before


def test_a_signed_package_must_sign_its_tosca_meta(tmp_path):
    from mecorch.package.meta import sign_manifest
    from support.packages import keypair
    private, public = keypair(tmp_path)
    image = fake_image(tmp_path, "container")
    files = L.edgegallery_files("container", "sig", image, "10.90.0.240")
    md = {"app_product_name": "sig"}
    for listed in (False, True):
        files.pop("sig.mf", None)
        files.pop("sig.mf.sig", None)
        files["sig.mf"] = L.manifest(files, md, skip=() if listed else (L.META,))
        files["sig.mf.sig"] = sign_manifest(files["sig.mf"], private)
        path = L.write_zip(tmp_path / f"sig-{listed}.zip", files)
        if listed:
            assert open_package(path, trusted_key=public).signature_verified
        else:
            assert open_package(path).app_d_id == "sig"         # unsigned use: accepted
            with pytest.raises(IntegrityError, match="TOSCA.meta is not listed in the manifest"):
                open_package(path, trusted_key=public)
