"""NFV-SOL 013 paging of a listing (app packages, app instances): at most
one page of matching documents after an opaque marker, and the marker of
the next page. The marker is the store's insertion sequence of the last
document returned, so pages stay stable while documents come and go."""

from __future__ import annotations

from typing import Any, Callable

from . import filters
from .errors import InvalidInput
from .store import TABLES, Store


def parse_marker(marker: str | None) -> int:
    if marker is None:
        return 0
    if not isinstance(marker, str) or not marker.isascii() or not marker.isdigit() \
            or len(marker) > 18:
        raise InvalidInput("nextpage_opaque_marker is not a marker this server gave")
    return int(marker)


def page(store: Store, table: str, view: Callable[[dict], dict], filter_expr: str | None,
         marker: str | None, size: int, drop: tuple[str, ...] = (),
         **where: Any) -> tuple[list[dict], str | None]:
    """Up to `size` views of documents of `table` that match `filter_expr`
    (tested on the view, as the API shows it) after `marker`, and the next
    page's marker (None on the last). The filter's eq/in terms narrow rows
    in SQLite first (filters.prefilter); `drop` and `where` as in
    Store.page."""
    after = parse_marker(marker)
    match = filters.prefilter(filter_expr, TABLES[table])
    keep = filters.matcher(filter_expr)
    out: list[dict] = []
    while len(out) < size:
        rows = store.page(table, after, size, match=match, drop=drop, **where)
        for seq, doc in rows:
            after = seq
            shown = view(doc)
            if keep(shown):
                out.append(shown)
                if len(out) == size:
                    break
        if len(rows) < size:
            return out, None
    more = store.page(table, after, 1, match=match, drop=drop, **where)
    return out, (str(after) if more else None)
