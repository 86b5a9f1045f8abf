"""The Linux MEP driver: dnsmasq for DNS rules, iptables for traffic rules.

`dnsmasq` and `iptables` hold the pure renderers and the few backend calls;
`driver.LinuxMEP` ties them together (entry point `drivers.linux_mep:LinuxMEP`).
"""

from .driver import LinuxMEP

__all__ = ["LinuxMEP"]
