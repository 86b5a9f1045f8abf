"""The one place where libvirt's exceptions become mecorch errors."""

from __future__ import annotations

import contextlib
from typing import Iterator

import libvirt

from mecorch.kernel.errors import BackendError, BackendUnavailable, NotFound

# libvirt prints every error on stderr by default; the driver reports them
# through mecorch's errors instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN_METADATA,
}
_UNREACHABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_AUTH_FAILED}
VIRTLOGD_HINT = ("virtlogd is not running: start `virtlogd` before libvirtd "
                 "(vagrant/provision.sh does)")


def is_connection_error(e: "libvirt.libvirtError") -> bool:
    code, dom = e.get_error_code(), e.get_error_domain()
    if code in _UNREACHABLE:
        return True
    # Socket-level failures (refused, no such socket, closed by the daemon).
    return dom in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE) and code in (
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INTERNAL_ERROR)


def translate(e: "libvirt.libvirtError", what: str) -> BackendError | NotFound:
    msg = e.get_error_message() or str(e)
    code = e.get_error_code()
    if is_connection_error(e):
        return BackendUnavailable(f"{what}: libvirtd unreachable: {msg}")
    if code in _NOT_FOUND:
        return NotFound(f"{what}: {msg}")
    if "virtlogd-sock" in msg:
        return BackendError(f"{what}: {msg} ({VIRTLOGD_HINT})")
    return BackendError(f"{what}: {msg}")


@contextlib.contextmanager
def libvirt_errors(what: str) -> Iterator[None]:
    """Run a block of libvirt calls; re-raise libvirt's error as the
    matching mecorch error (unreachable -> BackendUnavailable, missing
    object -> NotFound, anything else -> BackendError with its message)."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, what) from None


@contextlib.contextmanager
def migration_errors(what: str, target: str) -> Iterator[None]:
    """A migration's libvirt calls: any failure is a BackendError naming the
    target (an unreachable target is not this host's libvirtd being down:
    never BackendUnavailable, which would mark this host unreachable)."""
    try:
        yield
    except libvirt.libvirtError as e:
        msg = e.get_error_message() or str(e)
        raise BackendError(f"{what} to {target}: {msg}") from None
