"""The MEP service of a host: the one object the host engine, the API and
the CLI call for each instance's traffic and DNS rules, the Mp1 calls an
app makes about itself (MEC 011 app support), and termination notices.

It composes the parts, one job each, and passes their calls through:
- `claims.py`:         the claims ledger (who holds which address, port and
                       DNS name on a host; where a rule may send traffic).
- `platform_rules.py`: pushing a rule set to the host's MEP driver.
- `app_access.py`:     Mp1 tokens, what an app is told, app-network gateways.
- `mp1.py`:            the Mp1 API (rules, subscriptions).
- `termination.py`:    termination notices and their confirmations.
- `services.py`:       the MEC 011 service registry (its services follow
                       their provider: told here when it goes out of
                       service, comes back or is gone).
And it keeps an instance's rules out of service while its runtime does not
run (`follow_runtime`).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Sequence

from mecorch.kernel.errors import MecorchError
from mecorch.mepm.app_access import AppAccess
from mecorch.mepm.claims import ClaimsLedger
from mecorch.mepm.inventory import EdgeHost, Inventory
from mecorch.mepm.mp1 import Mp1Api
from mecorch.mepm.platform_rules import PlatformRules
from mecorch.mepm.services import ServiceRegistry
from mecorch.mepm.termination import TerminationNotices
from mecorch.spec.rules import DnsRule, TrafficRule
from mecorch.kernel.states import DeploymentType
from mecorch.kernel.store import Store

log = logging.getLogger("mecorch.mep")

class MepService:
    def __init__(self, store: Store, inventory: Inventory, cfg: dict):
        self.store = store
        self.inventory = inventory
        callback_networks = [ipaddress.ip_network(n) for n in cfg["api"]["callback_networks"]]
        self.claims = ClaimsLedger(store)
        self.rules = PlatformRules(store, self.claims)
        self.access = AppAccess(store, inventory, cfg)
        # Mp1 subscriptions and the terminations waiting on them share one
        # lock (not the ledger's lock: a notice never waits behind a rule
        # change)
        subs_lock = threading.Lock()
        self.mp1 = Mp1Api(store, inventory, self.claims, self.rules, subs_lock,
                          callback_networks, int(cfg["api"]["mp1_max_subscriptions"]))
        self.termination = TerminationNotices(store, subs_lock, callback_networks,
                                              float(cfg["api"]["notify_timeout_s"]))
        self.services = ServiceRegistry(store, cfg, int(cfg["api"]["mp1_max_services"]),
                                        int(cfg["api"]["mp1_max_subscriptions"]))

    # ------------------------------------------------------------ settings
    @property
    def callback_networks(self) -> list:
        """Where subscription callbacks may go (api.callback_networks)."""
        return self.mp1.callback_networks

    @callback_networks.setter
    def callback_networks(self, networks: list) -> None:
        self.mp1.callback_networks = self.termination.callback_networks = networks
        self.services.callback_networks = self.services.notifier.networks = networks

    @property
    def mp1_port(self) -> int:
        return self.access.mp1_port

    @mp1_port.setter
    def mp1_port(self, port: int) -> None:
        self.access.mp1_port = port

    @property
    def mp1_gateways(self) -> set[str]:
        return self.access.mp1_gateways

    # ------------------------------------------------------------ rule sets
    def set_rules(self, instance_id: str, traffic: Sequence[TrafficRule],
                  dns: Sequence[DnsRule], host: EdgeHost | None = None,
                  share: bool = False) -> None:
        self.claims.set_rules(instance_id, traffic, dns, host, share)

    def release(self, instance_id: str) -> None:
        self.claims.release(instance_id)

    def apply(self, host: EdgeHost, instance_id: str, target_ip: str | None) -> None:
        self.rules.apply(host, instance_id, target_ip)

    def remove(self, host: EdgeHost, instance_id: str) -> None:
        """The instance no longer runs on the host: its rules and the
        services it provides go."""
        self.rules.remove(host, instance_id)
        self.services.provider_gone(instance_id)

    def forget(self, instance_id: str) -> None:
        self.rules.forget(instance_id)
        self.services.forget(instance_id)

    def follow_runtime(self, host: EdgeHost, instance_id: str, state: str) -> None:
        """No client is sent to a runtime that does not run: an instance
        whose runtime was seen STOPPED, MISSING or CRASH_LOOP (it died, the
        operator stopped it, a restart waits) is taken out of service
        (reason "down": its DNS answer and traffic-rule destination go, a
        replica's part goes to the others), and put back when it runs
        again. Only an instance whose rules are applied on this host; a
        failure is logged (the next change, or reconciliation, tries
        again). The caller holds the instance."""
        doc = self.store.get("rules", instance_id)
        if not doc or doc.get("hostId") != host.id:
            return
        try:
            if state == "RUNNING":
                self.restore(host, instance_id, "down")
            elif state in ("STOPPED", "MISSING", "CRASH_LOOP"):
                self.withdraw(host, instance_id, "down")
        except MecorchError as e:
            log.warning("rules of %s not steered for its runtime %s: %s", instance_id, state,
                        e.detail)

    def withdraw(self, host: EdgeHost, instance_id: str, reason: str,
                 open_mep: bool = True) -> bool:
        """Out of service for `reason` (PlatformRules.withdraw); the
        services it provides turn INACTIVE."""
        try:
            return self.rules.withdraw(host, instance_id, reason, open_mep)
        finally:
            # recorded before the MEP was touched: followed even when that failed
            self.services.provider_changed(instance_id)

    def restore(self, host: EdgeHost, instance_id: str, reason: str) -> bool:
        """Back in service once no reason is left; its services follow."""
        try:
            return self.rules.restore(host, instance_id, reason)
        finally:
            self.services.provider_changed(instance_id)

    # ------------------------------------------------------------ app access
    @staticmethod
    def new_app_token() -> tuple[str, str]:
        return AppAccess.new_app_token()

    def app_env(self, instance_id: str, token: str, host: EdgeHost | None = None,
                manner: DeploymentType | None = None) -> dict[str, str]:
        return self.access.app_env(instance_id, token, host, manner)

    def app_gateways(self) -> list[str]:
        return self.access.app_gateways()

    def serve_dns_everywhere(self) -> None:
        self.access.serve_dns_everywhere()

    def app_token_owner(self, token: str) -> str | None:
        return self.access.app_token_owner(token)

    # ------------------------------------------------------------ Mp1
    def list_rules(self, instance_id: str, kind: str) -> list[dict]:
        return self.mp1.list_rules(instance_id, kind)

    def get_rule(self, instance_id: str, kind: str, rule_id: str) -> dict:
        return self.mp1.get_rule(instance_id, kind, rule_id)

    def put_rule(self, instance_id: str, kind: str, rule_id: str, body,
                 if_match: str | None = None) -> dict:
        return self.mp1.put_rule(instance_id, kind, rule_id, body, if_match)

    def subscribe(self, instance_id: str, body) -> dict:
        return self.mp1.subscribe(instance_id, body)

    def subscriptions(self, instance_id: str) -> dict:
        return self.mp1.subscriptions(instance_id)

    def subscription(self, instance_id: str, sid: str) -> dict:
        return self.mp1.subscription(instance_id, sid)

    def unsubscribe(self, instance_id: str, sid: str) -> None:
        self.mp1.unsubscribe(instance_id, sid)

    # ------------------------------------------------------------ termination
    def notify_termination(self, instance_id: str, timeout_s: float,
                           action: str = "TERMINATING",
                           cancel: threading.Event | None = None) -> bool:
        return self.termination.notify_termination(instance_id, timeout_s, action, cancel)

    def confirm_termination(self, instance_id: str, body) -> None:
        self.termination.confirm_termination(instance_id, body)

    def confirm_ready(self, instance_id: str, body) -> None:
        self.termination.confirm_ready(instance_id, body)
