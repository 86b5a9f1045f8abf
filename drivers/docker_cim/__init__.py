"""The CIM on the Docker Engine (entry point `drivers.docker_cim:DockerCIM`).

Modules: `driver` (the DockerCIM class), `plan` (request validation and
object names, pure), `registry` (registry API v2 client), `pause` (the
pause image), `backend` (the one place backend errors are mapped).
"""

from .driver import DockerCIM

__all__ = ["DockerCIM"]
