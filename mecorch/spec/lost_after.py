"""`lostAfter`: how long an app's edge host may be cut off before the app is
given up there (a mecorch extension of the InstantiateAppRequest, like
Nomad's `disconnect { lost_after }`). One parser for both levels: the MEO
re-places the app after its host has been UNREACHABLE that long
(mecorch.meo.replace); the host's MEPM, told it by its MEO, fences the app
after that long without a word from its MEO (mecorch.mepm.fence), so the
copy it keeps serves nothing by the time the MEO has re-placed it."""

from __future__ import annotations

from mecorch.kernel import validate

FIELD = "lostAfter"
MAX_LOST_AFTER_S = 7 * 24 * 3600        # a week: beyond that an operator decides


def parse_lost_after(body: dict) -> int | None:
    """The request's `lostAfter`: whole seconds, 1 to a week; None: absent."""
    if FIELD not in body:
        return None
    return validate.integer(body[FIELD], FIELD, 1, MAX_LOST_AFTER_S)
