"""NFV-SOL 013 paging of a listing (app packages, app instances): at most
one page of matching documents after an opaque marker, and the marker of
the next page. The marker is the store's insertion sequence of the last
document returned, so pages stay stable while documents come and go."""

from __future__ import annotations

import json
from typing import Any

from mecorch.kernel import filters
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.store import TABLES, StateStore


def parse_marker(marker: str | None) -> int:
    if marker is None:
        return 0
    if not isinstance(marker, str) or not marker.isascii() or not marker.isdigit() \
            or len(marker) > 18:
        raise InvalidInput("nextpage_opaque_marker is not a marker this server gave")
    return int(marker)


def page(store: StateStore, table: str, filter_expr: str | None, marker: str | None, size: int,
         **where: Any) -> tuple[list[str], str | None]:
    """Up to `size` views (as the store keeps them: JSON texts) of
    documents of `table` that match `filter_expr` (tested on the view, as
    the API shows it) after `marker`, and the next page's marker (None on
    the last). The filter's eq/in terms narrow rows in SQLite first
    (filters.prefilter); when they are all it has, on indexed columns,
    the database's answer is exact and no view is decoded. `where` as in
    Store.page."""
    after = parse_marker(marker)
    columns = TABLES[table]
    match = filters.prefilter(filter_expr, columns)
    test = None if filters.exact_on_columns(filter_expr, columns) \
        else filters.matcher(filter_expr)
    out: list[str] = []
    while len(out) < size:
        rows = store.page_views(table, after, size, match=match, **where)
        for seq, view in rows:
            after = seq
            if test is None or test(json.loads(view)):
                out.append(view)
                if len(out) == size:
                    break
        if len(rows) < size:
            return out, None
    more = store.page(table, after, 1, match=match, **where)
    return out, (str(after) if more else None)


def body(views: list[str]) -> bytes:
    """A page's views as the JSON array the API answers with."""
    return ("[" + ",".join(views) + "]").encode()
