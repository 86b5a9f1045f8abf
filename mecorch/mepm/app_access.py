"""App access: the Mp1 token each instance is issued, what an app is told
about its Mp1 (`app_env`), and the app-network gateways Mp1 and DNS are
served on.

Each instantiation issues the instance an Mp1 token (random; only its
SHA-256 is stored, in the instance record as `_mp1Token`) that the app gets
in its environment (`app_env`); the API lets that token reach the
instance's own Mp1 resources and nothing else (mecorch.kernel.http).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from mecorch.kernel.errors import MecorchError
from mecorch.driverapi.contracts import DnsOnAppNetworks
from mecorch.mepm.inventory import EdgeHost, Inventory
from mecorch.mepm.mp1 import MP1
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Store

log = logging.getLogger("mecorch.mep")


class AppAccess:
    def __init__(self, store: Store, inventory: Inventory, cfg: dict):
        self.store = store
        self.inventory = inventory
        # Where apps reach Mp1: api.mp1_url if set, else the listen address
        # (loopback by default, which a bridged container cannot reach).
        self.cfg_mp1_url = cfg["api"].get("mp1_url")
        self.mp1_url = self.cfg_mp1_url or f"http://{cfg['api']['listen']}{MP1}"
        self.mp1_port = int(cfg["api"]["listen"].rpartition(":")[2] or 8080)
        # App-network gateway addresses Mp1 is served on (mecorch.api.serve_app_networks
        # adds them): an app on such a network is given that address.
        self.mp1_gateways: set[str] = set()

    # ------------------------------------------------------------ Mp1 tokens
    @staticmethod
    def new_app_token() -> tuple[str, str]:
        """(token, what to store: its SHA-256). The token is 256 random
        bits, so a fast hash is enough: there is nothing to brute-force."""
        token = secrets.token_urlsafe(32)
        return token, token_digest(token)

    def app_env(self, instance_id: str, token: str, host: EdgeHost | None = None,
                manner: DeploymentType | None = None) -> dict[str, str]:
        """What an app instance is told about its Mp1 (environment variables
        of a container; SMBIOS OEM strings of a VM)."""
        return {"MEC_APP_INSTANCE_ID": instance_id, "MEC_APP_TOKEN": token,
                "MEC_MP1_URL": self.app_mp1_url(host, manner)}

    def app_mp1_url(self, host: EdgeHost | None, manner: DeploymentType | None) -> str:
        """api.mp1_url when set; else the gateway of the app's network when
        Mp1 is served there; else the listen address."""
        gateway = self.gateway(host, manner) if host and manner and \
            not self.cfg_mp1_url else None
        if gateway and gateway in self.mp1_gateways:
            return f"http://{gateway}:{self.mp1_port}{MP1}"
        return self.mp1_url

    @staticmethod
    def gateway(host: EdgeHost, manner: DeploymentType) -> str | None:
        """The host's address on the app network of `manner`, or None."""
        if not host.has(manner):
            return None
        try:
            return host.compute(manner).app_gateway()
        except MecorchError as e:
            log.warning("no gateway of the %s network of host %s: %s", manner.value,
                        host.id, e.detail)
            return None

    def app_gateways(self) -> list[str]:
        """Every host's app-network gateway addresses (where Mp1 and DNS are
        served to apps)."""
        found = []
        for host in self.inventory.hosts.values():
            for manner in DeploymentType:
                gw = self.gateway(host, manner)
                if gw and gw not in found:
                    found.append(gw)
        return found

    def serve_dns_everywhere(self) -> None:
        """`serve_dns` on every host with a MEP; a failure is logged (the
        rules still work on the MEP's own listener)."""
        for host in self.inventory.hosts.values():
            if host.section("mep"):
                try:
                    self.serve_dns(host)
                except MecorchError as e:
                    log.warning("DNS not served on host %s's app networks: %s", host.id,
                                e.detail)

    def serve_dns(self, host: EdgeHost) -> None:
        """Have the host's MEP answer DNS on its app-network gateways too
        (and its data-plane address, which the MEP knows from its config).
        A MEP without that ability (no `DnsOnAppNetworks`: a fake) is left
        alone."""
        mep = host.mep()
        if isinstance(mep, DnsOnAppNetworks):
            mep.serve_dns_on([gw for gw in (self.gateway(host, m) for m in DeploymentType) if gw])

    def app_token_owner(self, token: str) -> str | None:
        """The instance an Mp1 token was issued to (and not yet revoked by
        its termination), or None."""
        digest = token_digest(token)
        # `_mp1TokenNext`: the new runtime's, while a rolling upgrade of the
        # instance runs (mecorch.mepm.upgrade); it becomes `_mp1Token`
        for inst in self.store.list("instances", keep=("id", "_mp1Token", "_mp1TokenNext")):
            for stored in (inst.get("_mp1Token"), inst.get("_mp1TokenNext")):
                if stored and hmac.compare_digest(stored, digest):
                    return inst["id"]
        return None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
