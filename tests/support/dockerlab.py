"""Fixtures for the Docker CIM on the real dockerd (its own network, the
sample image) and a resource request for it. (Was part of
test_docker_cim.)"""

from __future__ import annotations

import docker
import pytest

from drivers.docker_cim import DockerCIM
from mecorch.driverapi.model import ResourceRequest
from mecorch.kernel.states import DeploymentType
from support.lab import leftovers as lab_leftovers, remove_host

DOCKER_HOST = "unix:///var/run/docker.sock"


@pytest.fixture(scope="module")
def api():
    client = docker.APIClient(base_url=DOCKER_HOST, version="auto")
    yield client
    client.close()


@pytest.fixture
def config(tmp_path, uid, sample_container):
    return {"driver": "docker", "docker_host": DOCKER_HOST,
            "registry": sample_container["registry"], "network": f"mecorch-t-{uid}",
            "state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run"),
            "host_id": f"t-{uid}"}


@pytest.fixture
def cim(config, api):
    driver = DockerCIM(config)
    yield driver
    driver.close()
    # Safety net: remove whatever a failing test left, then the network;
    # a passing test left nothing of the host (the lab's census).
    host = {"id": config["host_id"], "cim": config}
    left = lab_leftovers(host)
    remove_host(host, config["state_dir"], config["run_dir"])
    assert left == [], f"left behind: {left}"


@pytest.fixture
def sample(cim, sample_container):
    """The provisioned sample image, marked available in this test's catalog."""
    cim.set_image_available(sample_container["ref"], True)
    return sample_container


def request(iid: str, image: str, **kw) -> ResourceRequest:
    return ResourceRequest(instance_id=iid, app_d_id="sample-app",
                           manner=DeploymentType.CONTAINER, image=image, **kw)


def leftovers(api, iid: str) -> list[str]:
    """Every container, volume or network labelled with the instance."""
    flt = {"label": [f"mecorch.instance={iid}"]}
    return ([f"container {c['Names'][0]}" for c in api.containers(all=True, filters=flt)]
            + [f"volume {v['Name']}" for v in api.volumes(filters=flt).get("Volumes") or []]
            + [f"network {n['Name']}" for n in api.networks(filters=flt)])
