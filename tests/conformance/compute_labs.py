"""One lab per ComputeDriver backend for the conformance suite.

A lab makes a driver on its own corner of the backend (a host id, network,
pool, Glance image names... derived from a unique id), with one deployable
image in the driver's repository, and knows how to:

- `request(iid, **kw)`   a valid ResourceRequest for that image
- `leftovers(iid)`       every backend object of the instance, by name or label
- `broken()`             a driver whose backend is unreachable
- `corrupt_image()`      make the repository copy differ from the package
- `failing_request(iid)` a valid request the backend fails after the driver
                         has made part of the instance (what must roll back)
- `fresh()`              a new driver on the same config (a restart)
- `teardown()`           remove whatever a failing test left, then assert
                         nothing of the lab is left on the backend

The real-backend labs talk to the daemons provision started (dockerd and
the registry, libvirtd) and to the all-in-one test cloud
(tests/openstack/cloud.sh); the fake lab runs the same contract on the
in-memory fake the core tests use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mecorch.driverapi.model import ResourceRequest, VolumeSpec
from mecorch.kernel.states import DeploymentType
from support.lab import free_port, free_subnet, leftovers, private_dir, remove_host

CLOUDS_YAML = os.environ.get("MECORCH_OS_CLOUDS_YAML", "/etc/mecorch/openstack-clouds.yaml")
OS_CLOUD = "mecorch-test"
OS_NETWORK = "mecorch-net"
OS_CONTAINER = os.environ.get("MECORCH_OS_NAME", "mecorch-os-aio")
CLOUD_HINT = "run `bash tests/openstack/cloud.sh` (builds and starts the test cloud) first"


class Lab:
    name = ""
    manner = DeploymentType.VM
    boots = True                # deploy really starts something (slow labs deploy less)

    def __init__(self, uid: str, tmp: Path, samples: dict):
        self.uid, self.tmp, self.samples = uid, tmp, samples
        self.image = ""
        self.drivers: list = []

    def _keep(self, drv):
        self.drivers.append(drv)
        return drv

    def make(self):
        raise NotImplementedError

    def request(self, iid: str, **kw) -> ResourceRequest:
        kw.setdefault("memory_mb", 192 if self.manner is DeploymentType.VM else 64)
        return ResourceRequest(instance_id=iid, app_d_id=f"appd-{iid}", manner=self.manner,
                               image=kw.pop("image", self.image), **kw)

    def unconnected(self):
        """A driver built on a config whose backend does not exist, to show
        the constructor touches nothing; returns (driver, paths it must not make)."""
        raise NotImplementedError

    def close(self):
        for d in self.drivers:
            d.close()


# ---------------------------------------------------------------- fake
class FakeLab(Lab):
    name = "fake"
    boots = False

    def make(self):
        from support.fakes import FakeCompute
        self.drv = self._keep(FakeCompute(self.manner))
        self.image = "sample"
        self.drv.import_image(self.image, "/dev/null")
        return self.drv

    def unconnected(self):
        from support.fakes import FakeCompute
        return FakeCompute(self.manner), []

    def leftovers(self, iid):
        return [f"instance {iid}"] if iid in self.drv.instances else []

    def broken(self):
        from support.fakes import FakeCompute
        drv = FakeCompute(self.manner)
        drv.import_image(self.image, "/dev/null")
        drv.down = True
        return drv

    def corrupt_image(self):
        self.drv.images[self.image]["corrupt"] = True

    def failing_request(self, iid):
        # The fake has nothing half-made to undo: its deploy fails whole.
        from support.fakes import broken
        self.drv.fail["deploy"] = broken("injected")
        return self.request(iid)

    def fresh(self):
        return self.drv         # its "backend" is its own memory

    def teardown(self):
        assert self.drv.instances == {}


# ---------------------------------------------------------------- docker
class DockerLab(Lab):
    name = "docker"
    manner = DeploymentType.CONTAINER
    DOCKER_HOST = "unix:///var/run/docker.sock"

    def make(self):
        import docker
        from drivers.docker_cim import DockerCIM
        self.api = docker.APIClient(base_url=self.DOCKER_HOST, version="auto")
        s = self.samples["container"]
        self.cfg = {"driver": "docker", "docker_host": self.DOCKER_HOST, "registry": s["registry"],
                    "network": f"mecorch-ct-{self.uid}", "state_dir": str(self.tmp / "state"),
                    "run_dir": str(self.tmp / "run"), "host_id": f"ct-{self.uid}"}
        self.drv = self._keep(DockerCIM(self.cfg))
        # Its own tag, so corrupting it harms no other test.
        self.image = f"{s['registry']}/mecorch-test/ct-{self.uid}:1"
        self.drv.import_image(self.image, s["tar"])
        return self.drv

    def unconnected(self):
        from drivers.docker_cim import DockerCIM
        cfg = dict(self.cfg, docker_host="unix:///nonexistent/docker.sock",
                   state_dir=str(self.tmp / "nc-state"), run_dir=str(self.tmp / "nc-run"))
        return DockerCIM(cfg), [self.tmp / "nc-state", self.tmp / "nc-run"]

    def leftovers(self, iid):
        flt = {"label": [f"mecorch.instance={iid}"]}
        return ([f"container {c['Names'][0]}" for c in self.api.containers(all=True, filters=flt)]
                + [f"volume {v['Name']}" for v in self.api.volumes(filters=flt).get("Volumes") or []]
                + [f"network {n['Name']}" for n in self.api.networks(filters=flt)])

    def broken(self):
        from drivers.docker_cim import DockerCIM
        drv = self._keep(DockerCIM(dict(self.cfg, docker_host=f"unix://{self.tmp}/no-dockerd.sock")))
        drv.set_image_available(self.image, True)
        return drv

    def corrupt_image(self):
        # Someone pushes other bytes under the same tag.
        self.drv.open()                              # builds mecorch/pause:1
        repo, tag = self.image.rsplit(":", 1)
        self.api.tag("mecorch/pause:1", repo, tag)
        for _ in self.api.push(repo, tag, stream=True, decode=True):
            pass
        self.api.remove_image(self.image)

    def failing_request(self, iid):
        return self.request(iid, volumes=(VolumeSpec("v", mount_path="/v"),),
                            command=("/no/such/binary",))

    def fresh(self):
        from drivers.docker_cim import DockerCIM
        return self._keep(DockerCIM(self.cfg))

    def teardown(self):
        self.close()
        host = {"id": self.cfg["host_id"], "cim": self.cfg}
        left = leftovers(host)
        remove_host(host, self.tmp / "state", self.tmp / "run")
        from drivers.docker_cim import DockerCIM
        DockerCIM(self.cfg).remove_image(self.image)
        self.api.close()
        assert left == [], f"docker objects left behind: {left}"


# ---------------------------------------------------------------- libvirt
class LibvirtLab(Lab):
    name = "libvirt"
    URI = "qemu:///system"

    def make(self):
        import libvirt
        from drivers.libvirt_vim import LibvirtVIM
        self.conn = libvirt.open(self.URI)
        # QEMU runs as libvirt-qemu: the state lives where it can enter.
        self.base = private_dir(f"ct-{self.uid}")
        self.cfg = {"driver": "libvirt", "uri": self.URI, "pool": f"mct-{self.uid}",
                    "network": f"mct-{self.uid}", "bridge": f"mct-{self.uid}",
                    "network_cidr": free_subnet(), "accel": "tcg",
                    "state_dir": str(self.base / "state"), "run_dir": str(self.base / "run"),
                    "host_id": f"ct-{self.uid}", "boot_timeout_s": 90}
        self.drv = self._keep(LibvirtVIM(self.cfg))
        self.image = "sample"
        vm = self.samples["vm"]
        self.drv.import_image(self.image, vm["path"], vm["sha256"])
        return self.drv

    def unconnected(self):
        from drivers.libvirt_vim import LibvirtVIM
        cfg = dict(self.cfg, uri="qemu+unix:///system?socket=/nonexistent/sock",
                   state_dir=str(self.base / "nc-state"), run_dir=str(self.base / "nc-run"))
        return LibvirtVIM(cfg), [self.base / "nc-state", self.base / "nc-run"]

    def leftovers(self, iid):
        from support.libvirtlab import domains, volumes
        from drivers.libvirt_vim import xmlrender as X
        left = [f"domain {d}" for d in domains(self.conn) if d == X.domain_name(iid)]
        left += [f"volume {v}" for v in volumes(self.conn, self.cfg["pool"])
                 if v.startswith(f"{iid}-")]
        pool_dir = Path(self.cfg["state_dir"]) / "pool"
        left += [f"file {f}" for f in (os.listdir(pool_dir) if pool_dir.exists() else [])
                 if f.startswith(f"{iid}-")]
        return left

    def broken(self):
        from drivers.libvirt_vim import LibvirtVIM
        drv = self._keep(LibvirtVIM(dict(self.cfg, uri="qemu+unix:///system?socket=/nonexistent/sock")))
        return drv

    def corrupt_image(self):
        path = Path(self.cfg["state_dir"]) / "vm-images" / f"{self.image}.qcow2"
        with open(path, "r+b") as f:          # a byte in the middle, size unchanged
            f.seek(path.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))

    def failing_request(self, iid):
        # Base, overlay, data volume and domain are made; QEMU cannot start.
        return self.request(iid, memory_mb=1 << 22, volumes=(VolumeSpec("data", 0.01),))

    def fresh(self):
        from drivers.libvirt_vim import LibvirtVIM
        return self._keep(LibvirtVIM(self.cfg))

    def teardown(self):
        self.close()
        conn, uid = self.conn, self.uid
        host = {"id": self.cfg["host_id"], "vim": self.cfg}
        left = leftovers(host)
        remove_host(host, self.cfg["state_dir"], self.cfg["run_dir"])
        shutil.rmtree(self.base, ignore_errors=True)
        left += [d.name() for d in conn.listAllDomains(0) if uid in d.name()]
        conn.close()
        assert left == [], f"domains left behind: {left}"


# ---------------------------------------------------------------- openstack
def os_admin():
    """An admin connection to the test cloud, straight through openstacksdk."""
    import openstack
    from openstack import config as occ
    if not os.path.isfile(CLOUDS_YAML):
        pytest.fail(f"{CLOUDS_YAML} is missing: {CLOUD_HINT}", pytrace=False)
    region = occ.OpenStackConfig(config_files=[CLOUDS_YAML], load_envvars=False).get_one(
        cloud=OS_CLOUD)
    conn = openstack.connection.Connection(config=region)
    try:
        conn.authorize()
    except Exception as e:  # noqa: BLE001 - any failure means the cloud is not there
        pytest.fail(f"the test cloud does not answer ({e}): {CLOUD_HINT}", pytrace=False)
    return conn


def os_owned(conn, host_id: str) -> list[str]:
    """Every server, port, flavor and image of one mecorch host on the cloud."""
    from drivers.openstack_vim import flavors as F
    left = [f"server {s.name}" for s in conn.compute.servers(details=True, name="^mecorch-")
            if (s.metadata or {}).get("mecorch_host") == host_id]
    left += [f"port {p.name}" for p in conn.network.ports()
             if (p.name or "").startswith("mecorch-") and f"host={host_id} " in (p.description or "")]
    for f in conn.compute.flavors(details=True, is_public=None):
        if f.name.startswith("mecorch."):
            specs = conn.compute.fetch_flavor_extra_specs(f).extra_specs or {}
            if specs.get(F.OWNER_SPEC) == host_id:
                left.append(f"flavor {f.name}")
    left += [f"image {i.name}" for i in conn.image.images()
             if i.name.startswith(f"mecorch.{host_id}.")]
    return left


class OpenStackLab(Lab):
    name = "openstack"

    def config(self, **kw) -> dict:
        cfg = {"driver": "openstack", "cloud": OS_CLOUD, "clouds_yaml": CLOUDS_YAML,
               "network": OS_NETWORK, "host_id": f"ct-{self.uid}",
               "state_dir": str(self.tmp / "state"), "run_dir": str(self.tmp / "run"),
               "boot_timeout_s": 240}
        cfg.update(kw)
        return cfg

    def make(self):
        from drivers.openstack_vim import OpenStackVIM
        self.admin = os_admin()
        self.cfg = self.config()
        self.drv = self._keep(OpenStackVIM(self.cfg))
        self.image = "sample"
        vm = self.samples["vm"]
        self.drv.import_image(self.image, vm["path"], vm["sha256"])
        return self.drv

    def unconnected(self):
        from drivers.openstack_vim import OpenStackVIM
        cfg = self.config(cloud=None, clouds_yaml=None, state_dir=str(self.tmp / "nc-state"),
                          auth={"auth_url": f"http://127.0.0.1:{free_port()}/v3",
                                "username": "u", "password": "p", "project_name": "p",
                                "user_domain_name": "Default", "project_domain_name": "Default"})
        cfg = {k: v for k, v in cfg.items() if v is not None}
        return OpenStackVIM(cfg), [self.tmp / "nc-state"]

    def leftovers(self, iid):
        name = f"mecorch-{iid}"
        return ([f"server {s.name}" for s in self.admin.compute.servers(name=f"^{name}$")]
                + [f"port {p.name}" for p in self.admin.network.ports(name=name)])

    def broken(self):
        drv, _ = self.unconnected()
        return self._keep(drv)

    def corrupt_image(self):
        # Someone replaces the Glance image with other bytes under the same
        # name and marks: Glance's hash no longer matches the package's.
        from drivers.openstack_vim.images import glance_name
        name = glance_name(self.cfg["host_id"], self.image)
        for img in self.admin.image.images(name=name):
            self.admin.image.delete_image(img)
        other = self.tmp / "other.raw"
        other.write_bytes(b"\0" * (1 << 20))
        self.admin.image.create_image(name, filename=str(other), disk_format="raw",
                                      container_format="bare", wait=True, allow_duplicates=True,
                                      visibility="private", mecorch_host=self.cfg["host_id"],
                                      mecorch_image=self.image)

    def failing_request(self, iid):
        # Within the quota, beyond what Placement has: the flavor and the
        # port are made, the server goes to ERROR (no valid host).
        return self.request(iid, memory_mb=48000, volumes=(VolumeSpec("data", 1),))

    def fresh(self):
        from drivers.openstack_vim import OpenStackVIM
        return self._keep(OpenStackVIM(self.cfg))

    def teardown(self):
        from drivers.openstack_vim import OpenStackVIM
        self.close()
        host = self.cfg["host_id"]
        drv = OpenStackVIM(self.cfg)
        left = os_owned(self.admin, host)
        for obs in drv.list_instances():
            drv.destroy(obs.handle)
        drv.remove_image(self.image)
        for p in self.admin.network.ports():
            if (p.name or "").startswith("mecorch-") and f"host={host} " in (p.description or ""):
                self.admin.network.delete_port(p)
        drv.close()
        assert [x for x in left if not x.startswith("image ")] == [], \
            f"left on the cloud: {left}"
        assert os_owned(self.admin, host) == []
        self.admin.close()


LABS = {"fake": FakeLab, "docker": DockerLab, "libvirt": LibvirtLab, "openstack": OpenStackLab}


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True)
