"""TOSCA.meta, the manifest and its signature (ETSI SOL004 in spirit).

TOSCA.meta (block 0 only; other TOSCA blocks are not used):

    TOSCA-Meta-File-Version: 1.0
    CSAR-Version: 1.1
    Created-By: mecorch
    Entry-Definitions: Definitions/appd.yaml
    ETSI-Entry-Manifest: sample-http.mf

ETSI-Entry-Manifest is what mecorch writes; packages made before SOL004
2.6, and EdgeGallery's, have none (reader.find_manifest then finds it).

The manifest: a metadata block, then one block per file of the package
(every file except the manifest and its signature):

    metadata:
    app_provider_id: mecorch
    app_product_name: sample-http
    app_release_date_time: 2026-11-26T02:21:00+00:00
    app_package_version: 1.0

    Source: Definitions/appd.yaml
    Algorithm: SHA-256
    Hash: 3f0c...

The signature is `<manifest>.sig` at the root: the raw signature of the
manifest's bytes, Ed25519 or RSA-PSS/SHA-256, by a PEM key (`cryptography`).
With Ed25519 it verifies with
`openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in X.mf -sigfile X.mf.sig`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mecorch.kernel.errors import IntegrityError, InvalidInput
from mecorch.kernel import validate
from mecorch.package.archive import check_member_name

META_PATH = "TOSCA-Metadata/TOSCA.meta"
SIGNATURE_SUFFIX = ".sig"
MANIFEST_METADATA = ("app_provider_id", "app_product_name",
                     "app_release_date_time", "app_package_version")
_LINE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(?: (.*))?")


def _key_values(text: str, what: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) of 'Key: Value' lines; blank lines are
    kept as ('', '') separators. Anything else is malformed."""
    out = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            out.append((n, "", ""))
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise InvalidInput(f"{what} line {n} is not 'Key: Value': {line[:80]!r}")
        out.append((n, m.group(1), (m.group(2) or "").strip()))
    return out


def _decode(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not UTF-8 text") from None
    if any(ord(c) < 32 and c not in "\r\n\t" for c in text):
        raise InvalidInput(f"{what} contains control characters")
    return text


# -- TOSCA.meta ---------------------------------------------------------------

def format_tosca_meta(entry_definitions: str, manifest: str) -> str:
    return ("TOSCA-Meta-File-Version: 1.0\n"
            "CSAR-Version: 1.1\n"
            "Created-By: mecorch\n"
            f"Entry-Definitions: {entry_definitions}\n"
            f"ETSI-Entry-Manifest: {manifest}\n")


def meta_block(data: bytes, what: str) -> dict[str, str]:
    """Block 0 of a TOSCA.meta-style file ('Key: Value' lines up to the
    first blank line) as a dict; later blocks (Name/Content-Type) are not
    used."""
    meta: dict[str, str] = {}
    for n, key, value in _key_values(_decode(data, what), what):
        if not key:
            if meta:
                break           # end of block 0; later blocks are ignored
            continue
        if key in meta:
            raise InvalidInput(f"{what} line {n}: {key} appears twice")
        meta[key] = value
    return meta


def parse_tosca_meta(data: bytes) -> dict[str, str]:
    """Block 0 of TOSCA.meta as a dict. Entry-Definitions is required;
    ETSI-Entry-Manifest (SOL004 2.6 and later, and mecorch's own packages)
    is optional: without it the reader looks for the manifest at the root
    (reader.find_manifest). Both must be safe member names."""
    what = META_PATH
    meta = meta_block(data, what)
    # Created-By is TOSCA's too, but EdgeGallery writes "Created-by": the
    # keyname case is not what makes a package trustworthy.
    if not meta.get("Created-By") and meta.get("Created-by"):
        meta["Created-By"] = meta.pop("Created-by")
    for key in ("TOSCA-Meta-File-Version", "CSAR-Version", "Created-By", "Entry-Definitions"):
        if not meta.get(key):
            raise InvalidInput(f"{what}: {key} is missing")
    if meta["TOSCA-Meta-File-Version"] not in ("1.0", "1.1"):
        raise InvalidInput(f"{what}: TOSCA-Meta-File-Version "
                           f"{meta['TOSCA-Meta-File-Version']!r} is not supported (1.0, 1.1)")
    check_member_name(meta["Entry-Definitions"], f"{what} Entry-Definitions")
    if "ETSI-Entry-Manifest" in meta:
        check_member_name(meta["ETSI-Entry-Manifest"], f"{what} ETSI-Entry-Manifest")
        if not meta["ETSI-Entry-Manifest"].endswith(".mf"):
            raise InvalidInput(f"{what}: ETSI-Entry-Manifest must name a .mf file")
    return meta


# -- manifest -----------------------------------------------------------------

def format_manifest(metadata: dict[str, str], hashes: dict[str, str]) -> str:
    lines = ["metadata:"]
    for key in MANIFEST_METADATA:
        lines.append(f"{key}: {validate.text(metadata[key], 'manifest ' + key)}")
    for name in sorted(hashes):
        lines += ["", f"Source: {name}", "Algorithm: SHA-256", f"Hash: {hashes[name]}"]
    return "\n".join(lines) + "\n"


def parse_manifest(data: bytes, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(metadata, {Source: sha256 hex}). Every Source block has exactly
    Source, Algorithm (SHA-256) and Hash, in that order."""
    blocks: list[list[tuple[int, str, str]]] = [[]]
    for item in _key_values(_decode(data, name), name):
        if item[1]:
            blocks[-1].append(item)
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    metadata: dict[str, str] = {}
    if blocks and blocks[0][0][1] == "metadata":
        head = blocks.pop(0)
        if head[0][2]:
            raise InvalidInput(f"{name} line {head[0][0]}: 'metadata:' takes no value")
        for n, key, value in head[1:]:
            if key in ("Source", "Algorithm", "Hash"):
                raise InvalidInput(f"{name} line {n}: expected a Source, Algorithm, Hash block "
                                   "after a blank line, not inside the metadata block")
            if key in metadata:
                raise InvalidInput(f"{name} line {n}: {key} appears twice")
            metadata[key] = value
    hashes: dict[str, str] = {}
    for block in blocks:
        n = block[0][0]
        keys = [k for _, k, _ in block]
        if keys != ["Source", "Algorithm", "Hash"]:
            raise InvalidInput(f"{name} line {n}: expected a Source, Algorithm, Hash block, "
                               f"got {', '.join(keys)}")
        source, algorithm, digest = (v for _, _, v in block)
        check_member_name(source, f"{name} Source")
        if algorithm != "SHA-256":
            raise InvalidInput(f"{name} line {n}: {source}: algorithm {algorithm!r} "
                               "is not supported (SHA-256)")
        if source in hashes:
            raise InvalidInput(f"{name}: {source} is listed twice")
        hashes[source] = validate.sha256(digest, f"{name} Hash of {source}")
    return metadata, hashes


# -- signature ----------------------------------------------------------------

def _pem(key: str | os.PathLike | bytes, what: str) -> bytes:
    """PEM bytes from PEM data (bytes) or a PEM file path."""
    if isinstance(key, bytes):
        return key
    try:
        return Path(key).read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {what} {key}: {e.strerror}") from None


def sign_manifest(data: bytes, private_key: str | os.PathLike | bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
    pem = _pem(private_key, "signing key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"signing key is not an unencrypted PEM private key: {e}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=padding.PSS.DIGEST_LENGTH),
                        hashes.SHA256())
    raise InvalidInput("signing key must be an Ed25519 or RSA key")


def verify_signature(data: bytes, signature: bytes, public_key: str | os.PathLike | bytes,
                     name: str) -> None:
    """Raise IntegrityError unless `signature` is `data` signed by the key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
    pem = _pem(public_key, "trusted key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"trusted key is not a PEM public key: {e}") from None
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                   salt_length=padding.PSS.DIGEST_LENGTH),
                       hashes.SHA256())
        else:
            raise InvalidInput("trusted key must be an Ed25519 or RSA public key")
    except InvalidSignature:
        raise IntegrityError(f"signature {name}{SIGNATURE_SUFFIX} of the manifest {name} "
                             "does not verify with the trusted key") from None
