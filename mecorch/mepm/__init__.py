"""The host level (ETSI MEC MEPM): one per edge host.

An MEPM owns the instances of its one host: it drives that host's CIM, VIM
and MEP, serves Mp1 to the host's apps and the Mm3 resources (ETSI MEC
010-2 app_pkgm + app_lcm, plus the documented `/mecorch/v1/hosts`
extension) to an MEO. It never imports the MEO: a host keeps serving its
apps while the MEO is away.

The host engine:
- `orchestrator.py`:  assembles the engine (store, inventory, packages,
                      LCM, MEP, reconciliation, subscriptions).
- `inventory.py`:     the edge hosts and their drivers, reservations.
- `lcm.py`:           instantiate / terminate / operate, journalled.
- `manner_policy.py`: the host facts the manner policy (`spec.decision`) needs.
- `mep.py`:           the MEP service, composed of one module per job:
  `claims.py` (the claims ledger), `platform_rules.py` (rules pushed to the
  MEP driver), `app_access.py` (Mp1 tokens, gateways), `mp1.py` (the Mp1
  API), `termination.py` (termination notices).
- `reconcile.py`, `watch.py`: observed state, crash recovery, orphans.
- `applogs.py`, `teardown.py`: app output; removing a host's objects.

Its faces:
- `contract.py`: the MEPM contract the MEO reaches a host through.
- `local.py`:    the contract in process (no hop).
- `remote.py`:   the contract over HTTP (Mm3).
- `hostinfo.py`: what a host reports of itself (manners, capacity, latency).
- `register.py`: registration with an MEO.
- `lease.py`:    one owner per host id.
- `routes.py`:   the `/mecorch/v1/hosts` route.
"""
