"""One owner per edge host on the backends themselves: a docker network
marked with another host id is never taken over (real dockerd)."""

from __future__ import annotations

import secrets

import docker
import pytest

from drivers.docker_cim import DockerCIM
from mecorch.kernel.errors import Conflict

pytestmark = pytest.mark.docker


def test_a_network_of_another_host_id_is_refused(tmp_path, sample_container):
    api = docker.APIClient(base_url="unix:///var/run/docker.sock")
    name = f"mecown-{secrets.token_hex(3)}"
    net = api.create_network(name, driver="bridge",
                             labels={"mecorch.network": "true", "mecorch.host": "their-host"})
    try:
        drv = DockerCIM({"driver": "docker", "docker_host": "unix:///var/run/docker.sock",
                         "registry": sample_container["registry"], "network": name,
                         "host_id": "my-host", "state_dir": str(tmp_path),
                         "run_dir": str(tmp_path / "run")})
        with pytest.raises(Conflict, match=f"network {name} belongs to edge host 'their-host'"):
            drv.open()
        drv.close()
        # untouched: still theirs, still there
        assert api.inspect_network(net["Id"])["Labels"]["mecorch.host"] == "their-host"
    finally:
        api.remove_network(net["Id"])
        api.close()
