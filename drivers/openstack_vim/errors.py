"""The one place where openstacksdk's and keystoneauth's exceptions become
mecorch errors.

Messages carry what failed and the service's own reason, never a token or
a password: keystoneauth's exceptions do not include request headers, and
the driver never logs a session.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, CapacityExceeded, Conflict, MecorchError, NotFound, Timeout,
    UnsupportedAction)

# Gateway answers of a cloud that is (partly) down or restarting.
_UNAVAILABLE_STATUS = {502, 503, 504}


def _reason(e: Exception) -> str:
    details = getattr(e, "details", None)
    msg = str(details or "") or str(e) or type(e).__name__
    return " ".join(msg.split())[:500]


def is_quota(e: Exception) -> bool:
    text = _reason(e).lower()
    return "quota" in text or "overquota" in text or "limit exceeded" in text


def translate(e: Exception, what: str) -> MecorchError:
    """The mecorch error for one openstacksdk/keystoneauth exception."""
    if isinstance(e, MecorchError):
        return e
    reason = _reason(e)
    if isinstance(e, ksa.ConnectionError):       # refused, timed out, TLS, reset
        return BackendUnavailable(f"{what}: the cloud is unreachable: {reason}")
    if isinstance(e, ksa.DiscoveryFailure):
        return BackendUnavailable(f"{what}: cannot discover the API: {reason}")
    if isinstance(e, ksa.EndpointNotFound):
        return BackendError(f"{what}: the service catalog has no such endpoint "
                            f"(check vim.region and the cloud's catalog): {reason}")
    if isinstance(e, ksa.Unauthorized):
        return BackendError(f"{what}: the cloud refused the credentials (check vim.cloud "
                            f"or vim.auth): {reason}")
    if isinstance(e, ksa.HttpError):
        status = getattr(e, "http_status", None)
        if status in _UNAVAILABLE_STATUS:
            return BackendUnavailable(f"{what}: HTTP {status}: {reason}")
        return BackendError(f"{what}: HTTP {status}: {reason}")
    if isinstance(e, sdk.ResourceTimeout):
        return Timeout(f"{what}: {reason}")
    if isinstance(e, sdk.ResourceFailure):
        return BackendError(f"{what}: {reason}")
    if isinstance(e, sdk.HttpException):
        status = e.status_code
        if status in _UNAVAILABLE_STATUS:
            return BackendUnavailable(f"{what}: HTTP {status}: {reason}")
        if status == 404:
            return NotFound(f"{what}: {reason}")
        if status == 413 or (status in (403, 409) and is_quota(e)):
            return CapacityExceeded(f"{what}: the cloud's quota refuses it: {reason}")
        if status == 409:
            return Conflict(f"{what}: {reason}")
        if status == 401:
            return BackendError(f"{what}: the cloud refused the credentials: {reason}")
        return BackendError(f"{what}: HTTP {status}: {reason}")
    if isinstance(e, sdk.ConfigException):
        return BackendError(f"{what}: OpenStack client configuration: {reason}")
    if isinstance(e, (sdk.SDKException, ksa.ClientException)):
        return BackendError(f"{what}: {reason}")
    raise TypeError("not an OpenStack exception")   # not ours to translate


OPENSTACK_ERRORS = (sdk.SDKException, ksa.ClientException)


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    """Run a block of openstacksdk calls; re-raise their exceptions as the
    matching mecorch error (unreachable or 502/503/504 -> BackendUnavailable,
    404 -> NotFound, quota -> CapacityExceeded (409), other 409 -> Conflict,
    a waiter's timeout -> Timeout, anything else -> BackendError)."""
    try:
        yield
    except OPENSTACK_ERRORS as e:
        raise translate(e, what) from None


@contextlib.contextmanager
def diagnostics_errors(what: str) -> Iterator[None]:
    """As os_errors, for Nova's server diagnostics, which its default policy
    (os_compute_api:os-server-diagnostics) grants to admins only: a 403 is
    not a failure of the cloud but figures it will not give this user
    (UnsupportedAction, with the cloud's reason)."""
    try:
        yield
    except sdk.HttpException as e:
        if e.status_code == 403:
            raise UnsupportedAction(
                f"{what}: the cloud refuses server diagnostics to this user (Nova's policy "
                f"os_compute_api:os-server-diagnostics; admin-only by default): "
                f"{_reason(e)}") from None
        raise translate(e, what) from None
    except OPENSTACK_ERRORS as e:
        raise translate(e, what) from None
