"""Package bytes written by the tests: fake Docker image tars and qcow2
images, AppD packages around the examples, a signing key pair. (Was part
of test_package.)"""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile
import warnings
import zipfile
from pathlib import Path

import yaml

from mecorch.package.meta import format_manifest, format_tosca_meta

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

SAMPLES = {"container": ("sample-container-app", "Artifacts/sample-http.tar"),
           "vm": ("sample-vm-app", "Artifacts/sample-vm.qcow2")}
META = "TOSCA-Metadata/TOSCA.meta"


def fake_docker_tar(path: Path) -> bytes:
    """A small real tar shaped like `docker save` output."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = b'[{"Config":"c.json","RepoTags":["mecorch/sample-http:1.0"],"Layers":[]}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def fake_qcow2(path: Path) -> bytes:
    data = b"QFI\xfb\x00\x00\x00\x03" + bytes(range(256)) * 16
    path.write_bytes(data)
    return data


def load_appd(kind: str) -> dict:
    return yaml.safe_load((EXAMPLES / SAMPLES[kind][0] / "Definitions/appd.yaml").read_text())


def write_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
              compression=zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def pack(path: Path, files: dict[str, bytes], appd_path: str = "Definitions/appd.yaml",
         manifest: str = "app.mf") -> Path:
    """A package with a correct TOSCA.meta and manifest around `files`, so
    a test can reach the checks that come after the manifest."""
    files = dict(files)
    files[META] = format_tosca_meta(appd_path, manifest).encode()
    hashes = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    md = {"app_provider_id": "t", "app_product_name": "t", "app_release_date_time": "x",
          "app_package_version": "1"}
    files[manifest] = format_manifest(md, hashes).encode()
    return write_zip(path, sorted(files.items()))


def appd_package(tmp_path: Path, appd: dict | str | bytes, kind: str = "container",
                 image: bytes | None = None) -> Path:
    """A consistent package around an AppD (dict, or raw YAML text)."""
    if isinstance(appd, dict):
        appd = yaml.safe_dump(appd)
    if isinstance(appd, str):
        appd = appd.encode()
    if image is None:
        p = tmp_path / "img"
        image = (fake_docker_tar if kind == "container" else fake_qcow2)(p)
    return pack(tmp_path / "appd.zip", {"Definitions/appd.yaml": appd,
                                        SAMPLES[kind][1]: image})


def keypair(tmp_path: Path, kind: str = "ed25519") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    key = (ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
           else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tag = secrets.token_hex(4)
    priv, pub = tmp_path / f"{kind}-{tag}.pem", tmp_path / f"{kind}-{tag}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub
