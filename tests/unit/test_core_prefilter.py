"""filters.prefilter narrows in SQL exactly as far as filters.apply would:
the store's answer filtered by `apply` is the same with or without it."""

from __future__ import annotations

import pytest

from mecorch.kernel import filters
from mecorch.kernel.store import Store

DOCS = [
    {"id": "a", "appDId": "x", "n": 5, "b": True, "l": ["p", "q"], "o": {"k": "v"},
     "s": "text", "nul": None, "arr": [{"k": "v"}, {"k": "w"}], "_hidden": "h"},
    {"id": "b", "appDId": "y", "n": "5", "b": "true", "l": "p", "o": {"k": "w"},
     "s": "other", "arr": [{"k": "z"}]},
    {"id": "c", "appDId": "x", "n": 5.0, "s": "", "nul": "", "o": "str", "a.b": "dot"},
]


@pytest.fixture
def store():
    s = Store(":memory:")
    for d in DOCS:
        s.put("packages", d["id"], d)
    yield s
    s.close()


@pytest.mark.parametrize("expr", [
    "(eq,appDId,x)", "(in,appDId,y,z)", "(eq,n,5)", "(eq,n,5.0)", "(eq,b,true)", "(eq,l,p)",
    "(eq,o/k,v)", "(in,s,text,)", "(eq,nul,)", "(in,nul,)", "(eq,arr/k,w)",
    "(neq,appDId,x)", "(eq,missing,)", "(in,missing,)", "(eq,appDId,x);(eq,o/k,v)",
    "(eq,a.b,dot)", "(eq,_hidden,h)", "(cont,s,ex)",
])
def test_prefilter_keeps_what_apply_keeps(store, expr):
    public = lambda docs: [{k: v for k, v in d.items() if not k.startswith("_")} for d in docs]
    full = filters.apply(public(store.list("packages")), expr)
    narrowed = store.list("packages", match=filters.prefilter(expr, ("appDId",)))
    assert filters.apply(public(narrowed), expr) == full


def test_prefilter_narrows_text_equality(store):
    cond = filters.prefilter("(eq,s,text)")
    assert [d["id"] for d in store.list("packages", match=cond)] == ["a"]
    assert filters.prefilter("(neq,s,text)") is None


def test_the_store_keeps_a_small_page_cache(tmp_path):
    """SQLite's page cache is capped (mecorch.kernel.store.CACHE_KIB): an idle node
    does not keep 2 MB of it for the process's life."""
    from mecorch.kernel.store import CACHE_KIB
    store = Store(tmp_path / "s.db")
    try:
        assert store._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        assert CACHE_KIB <= 512
    finally:
        store.close()
