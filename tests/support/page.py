"""Reading a page as an operator's browser does: headless Chromium
(Debian's `chromium`, installed from the Debian archive for the tests when
missing) and the tables of a status page. (Was part of test_status_page.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium_binary() -> str:
    """Debian's chromium; installed from the Debian archive for the tests
    when missing (the edge host itself never needs it)."""
    found = shutil.which("chromium")
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                            "chromium"], capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                "chromium"], capture_output=True, text=True, env=env,
                               timeout=900)
        found = shutil.which("chromium")
        if found is None:
            pytest.fail(f"cannot install chromium: {r.stderr[-2000:]}", pytrace=False)
    return found


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="mecorch-chromium-")     # a new empty profile
    try:
        return subprocess.run([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               *extra, url], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Tables(HTMLParser):
    """Each <table id=...> of a page as a list of rows (dicts by header)."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self._id = None
        self._head: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._id, self._head = a.get("id"), []
            self.tables[self._id] = []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head:
                self._head = self._row
            elif len(self._row) == len(self._head):
                self.tables[self._id].append(dict(zip(self._head, self._row)))
            self._row = None
        elif tag == "thead":
            self._in_head = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
