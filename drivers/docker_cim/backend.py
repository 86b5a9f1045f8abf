"""The one place where Docker Engine and registry failures become
mecorch errors, plus the lazy connection to the daemon.

Everything in this driver that touches dockerd (docker-py, and requests
underneath it) or the registry (urllib) runs inside `backend_errors()`, so
no backend exception type ever reaches the core.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
from typing import Any, Callable

import docker
import docker.errors
import docker.utils
import requests.exceptions

from mecorch.kernel.errors import (
    BackendError, BackendUnavailable, Conflict, ImageNotFound, MecorchError, NotFound, Timeout)


def _daemon_message(e: docker.errors.APIError) -> str:
    # The daemon's own sentence ("port is already allocated", ...) is the
    # useful part; docker-py's str() buries it after the request URL.
    return (e.explanation or str(e)).strip()


@contextlib.contextmanager
def backend_errors(what: str):
    """Run a block of backend calls; re-raise failures as mecorch errors
    whose detail starts with `what` (the step that failed)."""
    try:
        yield
    except MecorchError:
        raise
    except docker.errors.ImageNotFound as e:
        raise ImageNotFound(f"{what}: {_daemon_message(e)}") from None
    except docker.errors.NotFound as e:
        raise NotFound(f"{what}: {_daemon_message(e)}") from None
    except docker.errors.APIError as e:
        if e.status_code == 409:
            raise Conflict(f"{what}: {_daemon_message(e)}") from None
        raise BackendError(f"{what}: {_daemon_message(e)}") from None
    except (requests.exceptions.Timeout, socket.timeout, TimeoutError) as e:
        raise Timeout(f"{what}: the backend did not answer in time ({e})") from None
    except requests.exceptions.ConnectionError as e:
        raise BackendUnavailable(f"{what}: cannot reach dockerd ({_root_cause(e)})") from None
    except urllib.error.HTTPError as e:
        raise BackendError(f"{what}: registry answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise BackendUnavailable(f"{what}: cannot reach the registry ({e.reason})") from None
    except docker.errors.DockerException as e:
        # Raised by the client constructor when the version probe fails:
        # the daemon is down or the socket does not exist.
        if "server API version" in str(e):
            raise BackendUnavailable(f"{what}: cannot reach dockerd ({_root_cause(e)})") from None
        raise BackendError(f"{what}: {e}") from None
    except requests.exceptions.RequestException as e:
        raise BackendError(f"{what}: {e}") from None
    except ConnectionError as e:
        raise BackendUnavailable(f"{what}: {e}") from None


def _root_cause(e: BaseException) -> str:
    """The innermost exception's text (FileNotFoundError, ECONNREFUSED...),
    which says more than the urllib3 wrapper chain around it."""
    while True:
        nxt = e.__cause__ or e.__context__
        if nxt is None:
            return str(e)
        e = nxt


def connect(base_url: str, timeout: float) -> docker.APIClient:
    """A low-level client; `version="auto"` probes the daemon, so this is
    where an unreachable daemon is first seen (callers wrap it)."""
    return docker.APIClient(base_url=base_url, version="auto", timeout=timeout)


# What the driver reads of a container summary (GET /containers/json) and of
# its network endpoints; only mecorch's own labels are kept.
SUMMARY_KEYS = ("Id", "Names", "Labels", "State", "Status", "NetworkSettings")
ENDPOINT_KEYS = ("IPAddress", "MacAddress")
LABEL_PREFIX = "mecorch."


def _lean(obj: dict) -> dict:
    # Told apart by value types a label cannot have (label values are
    # strings): an image labelled "Id", "Names" or "EndpointID" stays whole.
    if isinstance(obj.get("Names"), list) and "Id" in obj:     # one container
        out = {k: obj[k] for k in SUMMARY_KEYS if k in obj}
        out["Labels"] = {k: v for k, v in (obj.get("Labels") or {}).items()
                         if k.startswith(LABEL_PREFIX)}
        return out
    if isinstance(obj.get("IPPrefixLen"), int):                # one of its networks
        return {k: obj[k] for k in ENDPOINT_KEYS if k in obj}
    return obj


def list_containers(api: docker.APIClient, filters: dict) -> list[dict]:
    """`api.containers(all=True, filters=filters)`, decoded lean: each
    container keeps SUMMARY_KEYS, its endpoints ENDPOINT_KEYS and its labels
    mecorch's own. A reconcile round or a health probe lists every container
    of the host; decoded whole, 200 app and 200 pause containers are ~2 MB
    of objects at once, and what is allocated meanwhile keeps that memory
    from going back to the system. Call inside `backend_errors()`."""
    res = api.get(f"{api.base_url}/v{api.api_version}/containers/json",
                  params={"all": 1, "filters": docker.utils.convert_filters(filters)},
                  timeout=api.timeout)
    try:
        res.raise_for_status()
    except requests.exceptions.HTTPError as e:
        docker.errors.create_api_error_from_http_exception(e)     # raises APIError
    return json.loads(res.content, object_hook=_lean)


def gone_ok(what: str, call: Callable, *args, **kw) -> Any:
    """Run one backend call; None when its object does not exist."""
    try:
        with backend_errors(what):
            return call(*args, **kw)
    except NotFound:
        return None


def drain(what: str, lines) -> list[dict]:
    """Drain a decoded pull/push/load progress stream. The daemon reports
    failures of these inside the stream (HTTP 200), not as a status."""
    out = []
    with backend_errors(what):
        for line in lines:
            if isinstance(line, dict) and line.get("error"):
                raise BackendError(f"{what}: {line['error']}")
            out.append(line)
    return out
