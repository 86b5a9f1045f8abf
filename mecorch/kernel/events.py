"""What the core tells about changes of its resources, for the ETSI
notifications (mecorch.notifications.subscriptions). The core calls these hooks right
after it stored a change; the default object ignores them, so package
management, the LCM and the journal work the same without subscribers.

A hook must never raise into the operation that called it, nor wait on the
network: `Subscriptions` only matches the change against its subscriptions
(in memory) and stores the notifications for the sender thread.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mecorch.notify")


class Events:
    def package(self, kind: str, doc: dict) -> None:
        """An app package was onboarded, enabled, disabled or deleted
        (`kind`: ONBOARDED, ENABLED, DISABLED, DELETED)."""

    def instance(self, doc: dict, state: str | None = None) -> None:
        """An app instance's state changed (instantiated and STARTED,
        STOPPED, STARTED again, NOT_INSTANTIATED after terminate).
        `state`: the AppInstanceState to notify when it is not the
        document's own (the supervisor gave up: STOPPED while the operator's
        operationalState stays STARTED)."""

    def operation(self, op: dict) -> None:
        """An LCM operation occurrence entered a new operationState."""


NONE = Events()


class Guarded(Events):
    """Forwards to `inner`, logging instead of raising: a bug in the
    notification path must not fail the operation that triggered it."""

    def __init__(self, inner: Events):
        self.inner = inner

    def package(self, kind: str, doc: dict) -> None:
        self._call(self.inner.package, kind, doc)

    def instance(self, doc: dict, state: str | None = None) -> None:
        self._call(self.inner.instance, doc, state)

    def operation(self, op: dict) -> None:
        self._call(self.inner.operation, op)

    @staticmethod
    def _call(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - see the class docstring
            log.exception("notification hook %s failed", fn.__name__)
