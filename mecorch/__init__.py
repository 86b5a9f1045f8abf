"""mecorch: a unified MEC orchestrator (MEO + MEPM) for small edge hosts.

The core (this package) owns the contracts: driver interfaces
(`mecorch.drivers`), the error hierarchy (`mecorch.errors`), the lifecycle
states (`mecorch.states`) and the value objects at the driver boundary
(`mecorch.model`). Backends live in the top-level `drivers` package.
"""

__version__ = "0.1.0"
