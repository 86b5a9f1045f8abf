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


class StoreUnavailable(MecorchError):
    """The state store (an MEO's PostgreSQL) cannot be reached: asked again
    later, nothing was done."""
    status, title = 503, "Store unavailable"


class Timeout(BackendError):
    """The backend did not reach the wanted state in time."""
    status, title = 504, "Timeout"
