"""One owner per edge host on the backends themselves: a docker network
marked with another host id is never taken over (real dockerd)."""

from __future__ import annotations

import docker
import pytest

from drivers.docker_cim import DockerCIM
from mecorch.kernel.errors import Conflict
from support.lab import Names, remove_host

pytestmark = pytest.mark.docker


def test_a_network_of_another_host_id_is_refused(tmp_path, sample_container):
    api = docker.APIClient(base_url="unix:///var/run/docker.sock")
    theirs = Names("own")                  # the other host: its id and network
    name, their_id = theirs.network, theirs.host_id
    net = api.create_network(name, driver="bridge",
                             labels={"mecorch.network": "true", "mecorch.host": their_id})
    try:
        drv = DockerCIM({"driver": "docker", "docker_host": "unix:///var/run/docker.sock",
                         "registry": sample_container["registry"], "network": name,
                         "host_id": "my-host", "state_dir": str(tmp_path),
                         "run_dir": str(tmp_path / "run")})
        with pytest.raises(Conflict, match=f"network {name} belongs to edge host '{their_id}'"):
            drv.open()
        drv.close()
        # untouched: still theirs, still there
        assert api.inspect_network(net["Id"])["Labels"]["mecorch.host"] == their_id
    finally:
        remove_host({"id": their_id, "cim": {"network": name}}, tmp_path, tmp_path / "run")
        api.close()
