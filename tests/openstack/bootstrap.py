"""Inside the test cloud container: Keystone content, the network, readiness.

Runs with Debian's python3-openstacksdk in one process per step (the
`openstack` CLI costs 4-7 s a call here). Not meant to run on the host.

    aio-bootstrap.py identity       service project, users, services, endpoints
    aio-bootstrap.py wait-compute   until nova-compute has registered
    aio-bootstrap.py network        the shared flat network mecorch-net
    aio-bootstrap.py ready          exit 0 when the cloud can boot a server
"""

import sys
import time

import openstack

PW = "mecorch-test-cloud"
KS = "http://127.0.0.1:35357/v3"
REGION = "RegionOne"
SERVICES = [  # name, type, url
    ("glance", "image", "http://127.0.0.1:9292"),
    ("placement", "placement", "http://127.0.0.1:8778"),
    ("nova", "compute", "http://127.0.0.1:8774/v2.1"),
    ("neutron", "network", "http://127.0.0.1:9696"),
]


def connect():
    return openstack.connect(
        auth_url=KS, username="admin", password=PW, project_name="admin",
        user_domain_name="Default", project_domain_name="Default",
        region_name=REGION, identity_api_version="3")


def identity(conn):
    idn = conn.identity
    project = idn.find_project("service") or idn.create_project(
        name="service", domain_id="default", description="service users")
    admin_role = idn.find_role("admin")
    for name, stype, url in SERVICES:
        user = idn.find_user(name) or idn.create_user(
            name=name, password=PW, domain_id="default")
        conn.grant_role(admin_role.id, user=user.id, project=project.id)
        service = idn.find_service(name) or idn.create_service(name=name, type=stype)
        have = {e.interface for e in idn.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                idn.create_endpoint(service_id=service.id, interface=interface,
                                    url=url, region_id=REGION)


def wait_compute(conn, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(s.binary == "nova-compute" and s.state == "up"
                   for s in conn.compute.services()):
                return
        except openstack.exceptions.SDKException as exc:
            print("waiting:", exc, file=sys.stderr)
        time.sleep(3)
    sys.exit("nova-compute did not register")


def network(conn):
    net = conn.network.find_network("mecorch-net") or conn.network.create_network(
        name="mecorch-net", shared=True, provider_network_type="flat",
        provider_physical_network="physnet1")
    if not list(conn.network.subnets(network_id=net.id)):
        conn.network.create_subnet(
            name="mecorch-subnet", network_id=net.id, ip_version=4,
            cidr="10.99.0.0/24", gateway_ip="10.99.0.1", enable_dhcp=True,
            allocation_pools=[{"start": "10.99.0.10", "end": "10.99.0.250"}])


def ready(conn):
    """Every API answers, compute is up and in Placement, both agents alive."""
    problems = []
    try:
        if not any(s.binary == "nova-compute" and s.state == "up"
                   for s in conn.compute.services()):
            problems.append("nova-compute not up")
        if not list(conn.placement.resource_providers()):
            problems.append("no resource provider in placement")
        list(conn.image.images(limit=1))
        agents = {a.binary for a in conn.network.agents() if a.is_alive}
        for binary in ("neutron-linuxbridge-agent", "neutron-dhcp-agent"):
            if binary not in agents:
                problems.append(binary + " not alive")
        if not conn.network.find_network("mecorch-net"):
            problems.append("network mecorch-net missing")
    except Exception as exc:  # noqa: BLE001 - readiness reports whatever is wrong
        problems.append(f"{type(exc).__name__}: {exc}")
    if problems:
        sys.exit("not ready: " + "; ".join(problems))
    print("ready")


if __name__ == "__main__":
    step = sys.argv[1]
    c = connect()
    {"identity": identity, "wait-compute": wait_compute,
     "network": network, "ready": ready}[step](c)
