"""mecorch: a unified MEC orchestrator (MEO + MEPM) for small edge hosts.

The two ETSI MEC levels each live in one package: `mepm` (the host engine:
LCM, inventory, MEP, reconciliation) and `meo` (the system level: registry
of MEPMs, placement, system LCM). Below them: `kernel` (errors, states,
store, HTTP toolkit, ...), `driverapi` (the driver contracts and value
objects), `spec` (what a request means), `package` (reading, checking and
keeping app packages), `notifications`; above them `api` (one router per
role) and `cli`. Backends live in the top-level `drivers` package.
"""

__version__ = "0.1.0"
