"""The OpenAPI documents (ours and ETSI's) and a validator of bodies
against the ETSI schemas. (Was part of test_openapi.)"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "mecorch" / "openapi"
DOC_PATH = OPENAPI / "mecorch.yaml"
ETSI = OPENAPI / "etsi"

LCM_FILE, PKGM_FILE, MP1_FILE = "MEC010-2_AppLcm.yaml", "MEC010-2_AppPkgMgmt.yaml", \
    "MecAppSupportApi.yaml"
SRV_FILE = "MecServiceMgmtApi.yaml"         # MEC 011 service management


# ---------------------------------------------------------------- loading
@functools.cache
def doc() -> dict:
    return yaml.safe_load(DOC_PATH.read_text())


@functools.cache
def etsi_doc(name: str) -> dict:
    return yaml.safe_load((ETSI / name).read_text())


def _json_schema_of_30(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a
    "null" type (the ETSI 3.0 files have none today; a later copy might)."""
    if isinstance(node, list):
        return [_json_schema_of_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema_of_30(v) for k, v in node.items()}
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _assert_draft_neutral(node: Any, where: str) -> None:
    """OpenAPI 3.0 schemas are a JSON Schema draft-04/05 dialect. Draft 7 and
    2020-12 read them the same unless they use exclusiveMinimum/Maximum
    (boolean in 3.0) or put keywords beside a $ref (ignored in 3.0): fail
    loudly if an ETSI 3.0 file ever does, rather than validate wrongly."""
    if isinstance(node, list):
        for n in node:
            _assert_draft_neutral(n, where)
    elif isinstance(node, dict):
        assert "exclusiveMinimum" not in node and "exclusiveMaximum" not in node, where
        if "$ref" in node:
            assert set(node) <= {"$ref", "description"}, (where, node)
        for v in node.values():
            _assert_draft_neutral(v, where)


@functools.cache
def etsi_components(name: str) -> dict:
    """The `components` of an ETSI file as JSON Schema (2020-12/Draft 7).
    Cached: callers must not change it."""
    d = etsi_doc(name)
    comps = copy.deepcopy(d["components"])
    if d["openapi"].startswith("3.0"):
        _assert_draft_neutral(comps, name)
        comps = _json_schema_of_30(comps)
    else:
        assert d["openapi"].startswith("3.1"), d["openapi"]
    return comps


def nfv_substitutes() -> dict:
    """What mecorch.yaml puts in place of the AppD's three "Ref NFV"
    placeholders, self-contained (no refs into mecorch.yaml)."""
    s = doc()["components"]["schemas"]
    ext = s["VirtualStorageDescriptor"]["allOf"][1]
    assert s["VirtualStorageDescriptor"]["allOf"][0] == {
        "$ref": "#/components/schemas/NfvVirtualStorageDesc"}
    return {"VirtualComputeDescription": s["NfvVirtualComputeDesc"],
            "SwImageDescriptor": s["NfvSwImageDesc"],
            "VirtualStorageDescriptor": {"allOf": [s["NfvVirtualStorageDesc"], ext]}}


@functools.cache
def etsi_validator(name: str, schema: str) -> jsonschema.protocols.Validator:
    """A validator of components/schemas/`schema` of the ETSI file `name`:
    {"$ref": ...} plus the file's components, so its internal refs resolve.
    3.0 files are read as Draft 7 (see _assert_draft_neutral), 3.1 files as
    2020-12, their dialect."""
    comps = copy.deepcopy(etsi_components(name))
    if name == PKGM_FILE and schema == "AppD":
        for key, sub in nfv_substitutes().items():
            assert comps["schemas"][key] == {"description": "Ref NFV", "type": "string"}, key
            comps["schemas"][key] = sub
        # mecorch's one departure in the AppD (mecorch.yaml DNSRuleDescriptor):
        # a DNS rule may omit ipAddress and answer the address its host gives
        dns = comps["schemas"]["DNSRuleDescriptor"]
        dns["required"] = [k for k in dns["required"] if k != "ipAddress"]
    root = {"$ref": f"#/components/schemas/{schema}", "components": comps}
    cls = jsonschema.Draft7Validator if etsi_doc(name)["openapi"].startswith("3.0") \
        else jsonschema.Draft202012Validator
    cls.check_schema(root)
    return cls(root)


def errors_of(validator, body) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(body)]


def validate_etsi(name: str, schema: str, body) -> None:
    """Fail naming every place `body` breaks components/schemas/`schema`
    of the ETSI file `name`."""
    errors = errors_of(etsi_validator(name, schema), body)
    assert not errors, (schema, errors, body)
