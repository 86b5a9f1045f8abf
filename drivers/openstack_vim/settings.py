"""The driver's config section (`hosts[].vim` with `driver: openstack`):
its schema (`SCHEMA`), which the core composes into the configuration's and
checks when the configuration is loaded (a typo is an error naming the key,
its path and the closest one), and `parse`, which reads the section by it
and checks what the schema cannot say (cloud or auth, the auth keys of its
kind, ranges). Light to import: no openstacksdk.

    vim:
      driver: openstack
      cloud: mycloud            # a clouds.yaml entry ...
      clouds_yaml: /etc/mecorch/clouds.yaml   # ... from this file (default: the
                                # standard places: ./clouds.yaml, ~/.config/openstack, /etc/openstack)
      auth:                     # ... or the credentials themselves
        auth_url: https://keystone.example:5000/v3
        username: mecorch       # password auth
        password: ...
        project_name: edge
        user_domain_name: Default
        project_domain_name: Default
        # or application credentials:
        # application_credential_id: ...
        # application_credential_secret: ...
      region: RegionOne
      network: edge-net         # Neutron network (name or id) the ports go on
      availability_zone: nova   # optional
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mecorch.kernel import validate
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.schema import ABSENT, NUMBER, OPEN_MAP, STR, key, read

ROLE = "vim"
SCHEMA = (
    key("cloud", STR, ABSENT, "a clouds.yaml entry (or give auth)", nullable=True),
    key("clouds_yaml", STR, ABSENT, "the clouds.yaml file (default: the standard places)",
        nullable=True),
    key("auth", OPEN_MAP, ABSENT, "the credentials: password or application credential",
        nullable=True),
    key("region", STR, ABSENT, "region name", nullable=True),
    key("network", STR, ABSENT, "Neutron network (name or id) the ports go on"),
    key("availability_zone", STR, ABSENT, "availability zone of the servers", nullable=True),
    key("boot_timeout_s", NUMBER, 300, "wait for a server to be ACTIVE"),
    key("stop_grace_s", NUMBER, 90, "wait for a clean stop before a hard one"),
    key("api_timeout_s", NUMBER, 60, "OpenStack API timeout"),
    key("flavor_prefix", STR, "mecorch", "name prefix of the flavors mecorch makes"),
)
PASSWORD_AUTH = ("auth_url", "username", "password", "project_name", "project_id",
                 "user_domain_name", "user_domain_id", "project_domain_name",
                 "project_domain_id", "user_id", "domain_name", "domain_id")
APPCRED_AUTH = ("auth_url", "application_credential_id", "application_credential_secret",
                "application_credential_name", "username", "user_id", "user_domain_name",
                "user_domain_id")
SECRETS = ("password", "application_credential_secret")


@dataclass(frozen=True)
class Settings:
    cloud: str | None
    clouds_yaml: str | None
    auth: dict = field(repr=False)      # never printed: it holds secrets
    auth_type: str | None
    region: str | None
    network: str
    availability_zone: str | None
    boot_timeout_s: float
    stop_grace_s: float
    api_timeout_s: float
    flavor_prefix: str
    host_id: str
    state_dir: Path

    def describe(self) -> str:
        """Where the driver points, for messages (no secret in it)."""
        where = f"cloud {self.cloud!r}" if self.cloud else f"auth_url {self.auth.get('auth_url')}"
        return f"{where} region {self.region or '(default)'}"


def _unknown(name: str, valid: tuple[str, ...], where: str) -> InvalidInput:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return InvalidInput(f"{where}: unknown key {name!r}{hint}")


def _auth(value: Any) -> tuple[dict, str]:
    if not isinstance(value, dict):
        raise InvalidInput("vim.auth: must be a mapping")
    appcred = "application_credential_id" in value or "application_credential_name" in value
    valid = APPCRED_AUTH if appcred else PASSWORD_AUTH
    out = {}
    for k, v in value.items():
        if k not in valid:
            raise _unknown(str(k), valid, "vim.auth")
        out[k] = validate.text(v, f"vim.auth.{k}", 1024)
    need = (("auth_url", "application_credential_secret") if appcred
            else ("auth_url", "password"))
    for k in need:
        if k not in out:
            raise InvalidInput(f"vim.auth: needs {k!r}")
    if not out["auth_url"].startswith(("http://", "https://")):
        raise InvalidInput("vim.auth.auth_url: must be an http(s) URL")
    return out, ("v3applicationcredential" if appcred else "password")


def parse(cfg: dict[str, Any]) -> Settings:
    """The section's values (its own, else the schema's defaults), with what
    the schema cannot check."""
    cfg = read(SCHEMA, cfg)
    cloud = cfg.get("cloud")
    has_auth = cfg.get("auth") is not None
    if (cloud is None) == (not has_auth):
        raise InvalidInput("vim: give either 'cloud' (a clouds.yaml entry) or 'auth', "
                           "not both and not neither")
    auth, auth_type = ({}, None)
    if has_auth:
        auth, auth_type = _auth(cfg["auth"])
    else:
        cloud = validate.text(cloud, "vim.cloud")
    clouds_yaml = cfg.get("clouds_yaml")
    if clouds_yaml is not None:
        if not isinstance(clouds_yaml, str) or not clouds_yaml.startswith("/"):
            raise InvalidInput("vim.clouds_yaml: must be an absolute path")
    network = cfg.get("network")
    if not network:
        raise InvalidInput("vim.network: the Neutron network (name or id) instances go on "
                           "is required")
    az = cfg.get("availability_zone")
    return Settings(
        cloud=cloud, clouds_yaml=clouds_yaml, auth=auth, auth_type=auth_type,
        region=validate.text(cfg["region"], "vim.region") if cfg.get("region") else None,
        network=validate.text(network, "vim.network"),
        availability_zone=validate.text(az, "vim.availability_zone") if az else None,
        boot_timeout_s=validate.number(cfg["boot_timeout_s"], "vim.boot_timeout_s", 1, 7200),
        stop_grace_s=validate.number(cfg["stop_grace_s"], "vim.stop_grace_s", 0, 3600),
        api_timeout_s=validate.number(cfg["api_timeout_s"], "vim.api_timeout_s", 1, 600),
        flavor_prefix=validate.ident(cfg["flavor_prefix"], "vim.flavor_prefix"),
        host_id=validate.ident(cfg.get("host_id", "default"), "vim.host_id"),
        state_dir=Path(cfg.get("state_dir") or "/var/lib/mecorch"),
    )
