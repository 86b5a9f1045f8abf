"""A minimal client of the Docker Registry HTTP API v2: the container image
repository. Only what mecorch needs: is a tag there (and its digest),
delete a manifest, is the registry up.

Manifests are asked for with explicit Accept headers: without them a
registry 2.x converts the manifest to the legacy schema 1 and answers with
a digest that matches nothing, so a delete by that digest would fail.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def _is_loopback(host: str) -> bool:
    if host.startswith("["):                       # [::1]:5000
        name = host[1:host.find("]")]
    else:
        name = host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Registry:
    """`host` is `addr:port` as it appears in image references. Plain HTTP
    is used only on loopback (as dockerd itself only trusts loopback
    without TLS); anything else is spoken to over HTTPS."""

    def __init__(self, host: str, timeout: float = 10.0):
        self.host = host
        self.scheme = "http" if _is_loopback(host) else "https"
        self.timeout = timeout

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{path}"

    def _request(self, method: str, path: str, headers: dict | None = None):
        req = urllib.request.Request(self._url(path), method=method, headers=headers or {})
        return urllib.request.urlopen(req, timeout=self.timeout)

    def ping(self) -> None:
        """Raise (urllib errors) unless the registry answers the v2 API."""
        with self._request("GET", ""):
            pass

    def digest(self, repo: str, tag: str) -> str | None:
        """The manifest digest of `repo:tag`, or None when it is absent."""
        try:
            with self._request("HEAD", f"{repo}/manifests/{tag}",
                               {"Accept": MANIFEST_TYPES}) as r:
                return r.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def delete(self, repo: str, digest: str) -> bool:
        """Delete a manifest by digest; False when it was already gone.
        This removes every tag of `repo` that points at the same digest:
        the v2 API has no per-tag delete."""
        try:
            with self._request("DELETE", f"{repo}/manifests/{digest}"):
                return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise
