"""The CIM on the Docker Engine (entry point `drivers.docker_cim:DockerCIM`).

Modules: `driver` (the DockerCIM class), `plan` (request validation and
object names, pure), `registry` (registry API v2 client), `pause` (the
pause image), `backend` (the one place backend errors are mapped),
`settings` (the config section's schema, imported alone by the core).
"""

from mecorch.driverapi.contracts import on_demand

__all__ = ["DockerCIM"]
__getattr__ = on_demand(__name__, "DockerCIM")     # the class and its backend library: when asked
