"""The system level (ETSI MEC MEO): app packages for the whole system, the
registry of edge hosts, placement, and the Mm1 northbound APIs for the OSS.
It reaches a host only through the MEPM contract (`mecorch.mepm.contract`):
in process or over HTTP (Mm3).

- `orchestrator.py`: wires the MEO (`mecorch serve --role meo`).
- `registry.py`:     the edge hosts, their heartbeat, UNREACHABLE, resync.
- `lcm.py`:          app lifecycle over the hosts' MEPMs.
- `replace.py`:      re-placement of opted-in apps whose host is lost.
- `packages.py`:     packages kept by the MEO, copied to a host on first use.
- `routes.py`:       the host registry's HTTP resources (an extension).
"""
