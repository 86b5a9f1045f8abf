"""Attribute-based filtering (ETSI GS MEC 009 / SOL 013 `filter=`).

    filter=(eq,appName,sample);(neq,usageState,IN_USE);(in,appDId,a,b)

Each term is (op,attribute,value[,value...]); terms are ANDed. Attributes
are paths through objects with '/' ("instantiatedAppState/operationalState").
Operators: eq neq in nin gt gte lt lte cont ncont.
"""

from __future__ import annotations

import functools
import re
from pathlib import PurePosixPath
from typing import Any, Callable

from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.store import AllOf, ColumnIn, TextIn

_TERM = re.compile(r"\((eq|neq|in|nin|gt|gte|lt|lte|cont|ncont),([A-Za-z0-9_/.]{1,128}),"
                   r"([^()]{0,1024})\)")
_MAX_TERMS = 16


def _num(a: Any, b: str) -> tuple[float, float] | None:
    try:
        return float(a), float(b)
    except (TypeError, ValueError):
        return None


def _cmp(op: str) -> Callable[[Any, list[str]], bool]:
    def fn(actual: Any, values: list[str]) -> bool:
        if isinstance(actual, (list, tuple)):
            return any(fn(a, values) for a in actual)
        text = "" if actual is None else str(actual).lower() if isinstance(actual, bool) \
            else str(actual)
        if op == "eq":
            return actual is not None and text == values[0]
        if op == "neq":
            return text != values[0]
        if op == "in":
            return text in values
        if op == "nin":
            return text not in values
        if op == "cont":
            return any(v in text for v in values)
        if op == "ncont":
            return not any(v in text for v in values)
        pair = _num(actual, values[0])
        if pair is None:
            return False
        a, b = pair
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
    return fn


def parse(expr: str | None) -> list[tuple[str, list[str], list[str]]]:
    """[(op, path parts, values)]; InvalidInput on anything malformed."""
    if not expr:
        return []
    terms = expr.split(";")
    if len(terms) > _MAX_TERMS:
        raise InvalidInput(f"filter: at most {_MAX_TERMS} terms")
    out = []
    for term in terms:
        m = _TERM.fullmatch(term.strip())
        if not m:
            raise InvalidInput(f"filter: {term[:80]!r} is not (op,attribute,value)")
        op, path, values = m.groups()
        vals = values.split(",")
        if op in ("eq", "neq", "gt", "gte", "lt", "lte") and len(vals) != 1:
            raise InvalidInput(f"filter: {op} takes one value")
        out.append((op, path.split("/"), vals))
    return out


def _lookup(doc: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(doc, list):
            doc = [d.get(part) if isinstance(d, dict) else None for d in doc]
        elif isinstance(doc, dict):
            doc = doc.get(part)
        else:
            return None
    return doc


def prefilter(expr: str | None, columns: tuple[str, ...] = ()) -> AllOf | None:
    """A store condition (mecorch.kernel.store) that keeps a superset of
    what `apply` keeps, so a store can skip decoding most rows (decoding
    every document is what makes a query slow: 10,000 packages take
    ~0.6 s). Only eq/in terms on a text value narrow; numbers, booleans,
    arrays, nulls and missing paths all pass, and `apply` decides on them.
    A top-level attribute among `columns` (the store's indexed text copies
    of string fields) is matched on its column, using the index. None when
    no term narrows."""
    clauses: list = []
    for op, path, vals in parse(expr):
        if op not in ("eq", "in"):
            continue
        if len(path) == 1 and path[0] in columns:
            clauses.append(ColumnIn(path[0], tuple(vals)))
        else:
            # path parts match [A-Za-z0-9_.]+ (_TERM): each is a literal key
            clauses.append(TextIn(tuple(path), tuple(vals), or_not_text=True))
    return AllOf(tuple(clauses)) if clauses else None


def exact_on_columns(expr: str | None, columns: tuple[str, ...]) -> bool:
    """True when `prefilter` keeps exactly what `apply` keeps: every term
    is eq/in on a top-level attribute among `columns`. The store copies a
    string field into its column as it is, and the fields it indexes are
    strings (validated when written), so the column's equality is the
    term's. Also True for no filter at all."""
    return all(op in ("eq", "in") and len(path) == 1 and path[0] in columns
               for op, path, _ in parse(expr))


def matcher(expr: str | None) -> Callable[[dict], bool]:
    """The filter as a predicate, parsed once (a paged listing tests each
    document of a page with it)."""
    checks = [(_cmp(op), path, vals) for op, path, vals in parse(expr)]
    return lambda d: all(fn(_lookup(d, path), vals) for fn, path, vals in checks)


def apply(docs: list[dict], expr: str | None) -> list[dict]:
    if not expr:
        return docs
    return list(filter(matcher(expr), docs))


# ---------------------------------------------------------------- attributes
# A filter may name only attributes the resource has (ETSI GS MEC 009 /
# NFV-SOL 013: an attribute that does not exist is a 400). What a resource
# has is read from the published OpenAPI document (mecorch.yaml, which
# extends the ETSI schemas): one source for the document and the check.
_MAX_SCHEMA_DEPTH = 12


@functools.cache
def _openapi_file(name: str) -> dict:
    """One of the OpenAPI files shipped in the package. They are mecorch's
    own (not input), so libyaml's safe loader reads them where PyYAML has
    it: the strict pure-Python loader of yamlsafe took ~230 ms for the two
    files of the first filtered request, the whole of a start-up's budget
    (tests/test_filters.py checks both loaders read them the same)."""
    import yaml
    from importlib import resources
    text = resources.files("mecorch").joinpath("openapi", name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def _resolve(ref: str, base: str) -> tuple[dict, str]:
    target, _, pointer = ref.partition("#")
    name = base if not target else str(PurePosixPath(base).parent / target)
    node: Any = _openapi_file(name)
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, name


@functools.cache
def attributes(schema: str) -> tuple[frozenset[str], frozenset[str]]:
    """(attribute paths, open paths) of components/schemas/`schema` of
    mecorch.yaml: paths joined by '/' through objects and array items; an
    open path (an object with additionalProperties, e.g. userDefinedData)
    admits any attribute below it."""
    paths: set[str] = set()
    open_: set[str] = set()

    def walk(node: Any, file: str, prefix: tuple[str, ...], depth: int) -> None:
        if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
            return
        if isinstance(node.get("$ref"), str):
            target, where = _resolve(node["$ref"], file)
            walk(target, where, prefix, depth + 1)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []):
                walk(sub, file, prefix, depth + 1)
        if "items" in node:
            walk(node["items"], file, prefix, depth + 1)
        if node.get("additionalProperties") not in (None, False) and prefix:
            open_.add("/".join(prefix))
        for name, sub in (node.get("properties") or {}).items():
            path = prefix + (name,)
            paths.add("/".join(path))
            walk(sub, file, path, depth + 1)

    walk({"$ref": f"#/components/schemas/{schema}"}, "mecorch.yaml", (), 0)
    return frozenset(paths), frozenset(open_)


def check(expr: str | None, schema: str) -> None:
    """Refuse (400) a filter that names an attribute the resource
    `schema` (a schema of mecorch.yaml) does not have."""
    terms = parse(expr)
    if not terms:
        return
    paths, open_ = attributes(schema)
    for _, path, _ in terms:
        joined = "/".join(path)
        if joined in paths or any("/".join(path[:i]) in open_ for i in range(1, len(path))):
            continue
        raise InvalidInput(f"filter: {schema} has no attribute {joined!r}")
