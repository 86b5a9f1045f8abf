"""The Linux MEP driver: dnsmasq for DNS rules, iptables for traffic rules.

`dnsmasq` and `iptables` hold the pure renderers and the few backend calls;
`driver.LinuxMEP` ties them together (entry point `drivers.linux_mep:LinuxMEP`);
`settings` holds the config section's schema, imported alone by the core.
"""

from mecorch.driverapi.contracts import on_demand

__all__ = ["LinuxMEP"]
__getattr__ = on_demand(__name__, "LinuxMEP")     # the class and its backend library: when asked
