"""The host level (ETSI MEC MEPM): one per edge host.

An MEPM owns the instances of its one host: it drives that host's CIM, VIM
and MEP (the engine is the core's `Orchestrator` restricted to one host:
`lcm.py`, `mep.py`, `reconcile.py`), serves Mp1 to the host's apps and the
Mm3 resources (ETSI MEC 010-2 app_pkgm + app_lcm, plus the documented
`/mecorch/v1/hosts` extension) to an MEO. It never imports the MEO: a host
keeps serving its apps while the MEO is away.

- `contract.py`: the MEPM contract the MEO reaches a host through.
- `local.py`:    the contract in process (no hop).
- `remote.py`:   the contract over HTTP (Mm3).
- `hostinfo.py`: what a host reports of itself (manners, capacity, latency).
- `lease.py`:    one owner per host id.
"""
