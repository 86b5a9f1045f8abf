"""The `lab` fixture of a conformance suite: one test per lab, the lab
made before the test and torn down after it, even when making it failed
half-way (a lab's teardown removes whatever exists of it)."""

from __future__ import annotations

import pytest


def lab_fixture(labs: dict, marks: dict | None = None):
    """A `lab` fixture over `labs` (name -> Lab class taking (uid, tmp)),
    each param carrying its `marks` (name -> pytest mark)."""
    marks = marks or {}

    @pytest.fixture(params=[pytest.param(n, marks=marks.get(n, ())) for n in labs])
    def lab(request, uid, tmp_path):
        made = labs[request.param](uid, tmp_path)
        try:
            made.make()
            yield made
        finally:
            made.teardown()
    return lab
