"""The one error hierarchy of mecorch.

Every failure that leaves the core or a driver is a `MecorchError`. Each
class carries the HTTP status and the ProblemDetails title the API answers
with, so the REST layer maps errors in one place and a driver never lets a
backend's own exception (docker.errors.*, libvirt.libvirtError, ...) reach
its caller: drivers translate those in a single choke point each.
"""


class MecorchError(Exception):
    """Base of all mecorch errors. `detail` is the human-readable reason."""

    status = 500
    title = "Internal error"
    # seconds a client should wait before trying again (the answer's
    # Retry-After), for a failure that is expected to pass
    retry_after: int | None = None

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def problem(self, instance: str | None = None) -> dict:
        """ETSI/RFC 7807 ProblemDetails for this error."""
        body = {"type": "about:blank", "title": self.title,
                "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        return body


# -- the request is wrong -----------------------------------------------------

class InvalidInput(MecorchError):
    """A field failed validation; nothing was changed."""
    status, title = 400, "Bad request"


class UnsupportedAction(InvalidInput):
    """The request asks for something this backend cannot express (for
    example a traffic-rule action iptables has no equivalent for)."""
    title = "Unsupported action"


class Unauthorized(MecorchError):
    status, title = 401, "Unauthorized"


class Forbidden(MecorchError):
    status, title = 403, "Forbidden"


class NotFound(MecorchError):
    status, title = 404, "Not found"


class Conflict(MecorchError):
    """The resource is in a state that forbids the operation."""
    status, title = 409, "Conflict"


class NotImplementedHere(MecorchError):
    """An operation this level of mecorch does not offer (the detail names
    where it is offered)."""
    status, title = 501, "Not implemented"


class PreconditionFailed(MecorchError):
    """An If-Match/ETag precondition did not hold (Mp1 PUT)."""
    status, title = 412, "Precondition failed"


class PayloadTooLarge(InvalidInput):
    status, title = 413, "Payload too large"


# -- the request is fine but cannot be served here ----------------------------

class CapacityExceeded(Conflict):
    """No edge host has the CPU, memory or disk asked for; nothing changed."""
    title = "Insufficient capacity"


class ImageNotFound(NotFound):
    """The software image is not in the image repository."""
    title = "Image not found"


class ImageUnavailable(Conflict):
    """The image exists but mecorch has not marked it available."""
    title = "Image unavailable"


class IdempotencyMismatch(MecorchError):
    """An Idempotency-Key already used with another request body."""
    status, title = 422, "Idempotency-Key reused"


class IntegrityError(MecorchError):
    """A checksum, manifest or signature does not match."""
    status, title = 422, "Integrity check failed"


# -- a backend failed ------------------------------------------------------------

class BackendError(MecorchError):
    """The backend refused or failed the operation."""
    status, title = 502, "Backend error"


class BackendUnavailable(BackendError):
    """The backend daemon cannot be reached (down, restarting, no socket)."""
    status, title = 503, "Backend unavailable"


class Timeout(BackendError):
    """The backend did not reach the wanted state in time."""
    status, title = 504, "Timeout"


class StoreUnavailable(MecorchError):
    """The state store's database cannot be reached (PostgreSQL down,
    restarting, or the connection lost): nothing was done, or a commit's
    outcome is unknown (said in the detail). The next call opens a new
    connection."""
    status, title = 503, "State store unavailable"
    retry_after = 2
