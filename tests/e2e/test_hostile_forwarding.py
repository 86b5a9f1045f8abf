"""Hostile forwarding (issue 28): where a rule may send traffic and which
names it may claim.

Finding 1: a traffic rule's `dstInterface.dstIpAddress` (where the MEP
DNATs the service address to) was never checked, and the MEP's FWD chain
forwards (and its POST chain masquerades) every connection DNATed from the
service range: an app could steer its own service address to another,
unpublished container and read it from a UE. Now a rule steers only to its
own instance (its own address; none before it has one): anything else is a
400 naming dstIpAddress and the address, with nothing applied or stored;
the LinuxMEP driver refuses it too.

Finding 10: an app could claim the bare MEC domain (`mec.local`) as a DNS
name. Now only names below it are accepted.

The real-backend proof is a `mecorch serve` of its own (tests/support/meplab.py's
Lab: host id, docker network, chain prefix, service range, dnsmasq port and a
UE network namespace of its own) with one container app and a victim
container on another docker network of its own; the core logic also runs
through the real REST API with the in-memory fakes (tests/support/mepenv.py's
Env), and the driver's pure part is checked alone.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from drivers.linux_mep import iptables
from mecorch.spec import rules as R
from mecorch.kernel.client import ApiError
from mecorch.kernel.errors import InvalidInput
from mecorch.spec.rules import TrafficRule

from conftest import SAMPLE_CONTAINER_REF, run
from support.mepenv import CONTAINER_APPD, Env, descriptor, refused
from support.mepenv import dns as fake_dns
from support.mepenv import traffic as fake_traffic
from support.lab import private_dir
from support.meplab import EXAMPLES, INST, MP1, Lab, app_mp1, dns, etsi, poll, traffic

OPS = "/app_lcm/v1/app_lcm_op_occs"
# An address the fake CIM never gives (it counts 10.123.0.1, .2, ...).
ELSEWHERE = "10.123.9.9"


def steered(rule: dict, to: str) -> dict:
    """The rule steering to `to` (dstInterface.dstIpAddress)."""
    iface = {"interfaceType": "IP", "dstIpAddress": to}
    return {**rule, "dstInterface": [iface] if isinstance(rule.get("dstInterface"), list)
            else iface}


# -- the real backends -----------------------------------------------------------------

class ForwardingLab(Lab):
    """tests/support/meplab.py's lab with the container app only, and a
    victim: a container on a docker network of its own, unpublished,
    serving a secret file."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.victim = f"mcf28-{self.u}-victim"          # the container and its network
        self.secret = f"secret-{secrets.token_hex(8)}"
        self.victim_ip = ""

    def onboard(self) -> None:
        self.onboard_folder("sample-container-app", EXAMPLES / "sample-container-app")

    def up_victim(self) -> None:
        run("docker", "network", "create", self.victim)
        run("docker", "run", "-d", "--name", self.victim, "--network", self.victim,
            "--entrypoint", "/bin/sh", SAMPLE_CONTAINER_REF, "-c",
            f"echo {self.secret} > /www/secret.txt && exec /bin/serve")
        self.victim_ip = run("docker", "inspect", "-f",
                             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             self.victim).stdout.strip()
        assert self.victim_ip, "the victim container has no address"

    def down(self) -> list[str]:
        try:
            return super().down()
        finally:
            run("docker", "rm", "-f", self.victim, check=False)
            run("docker", "network", "rm", self.victim, check=False)

    def ue_get(self, address: str, path: str) -> str:
        """HTTP GET from the UE namespace (behind the data-plane address)."""
        return run("ip", "netns", "exec", self.ue_ns, "curl", "-s", "-m", "5",
                   f"http://{address}{path}", check=False).stdout

    def own_ip(self, iid: str) -> str:
        return self.api.get(f"{INST}/{iid}")["allocatedResources"]["network"][0]["ip"]

    def nothing_made(self, iid: str) -> None:
        """The instance was refused before anything was made for it."""
        assert self.api.get(f"{INST}/{iid}")["instantiationState"] == "NOT_INSTANTIATED"
        assert [o for o in self.api.get(OPS) if o["appInstanceId"] == iid] == []
        names = run("docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert [n for n in names if iid in n] == [], names


@pytest.fixture(scope="module")
def flab():
    tmp = private_dir("fwd28")
    lab = ForwardingLab(tmp)
    try:
        lab.up_victim()
        lab.up()
        lab.deploy("a", "sample-http", "CONTAINER")
        yield lab
    finally:
        left = lab.down()
        shutil.rmtree(tmp, ignore_errors=True)
    assert left == [], f"left behind after the API cleanup: {left}"


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


@pytest.mark.docker
@pytest.mark.libvirt
@pytest.mark.mep
class TestDnatTargetIsTheInstancesOwn:
    # -- the attack, on the real backends ---------------------------------------------
    def test_mp1_put_steering_to_another_container_is_400_and_nothing_changes(self, flab):
        lab, a, vip = flab, flab.ids["a"], flab.vip["a"]
        hostname = lab.in_app(a, "cat /www/hostname").strip()
        assert hostname
        # Before: the service address reaches the app itself; the victim has
        # a secret (the host reaches it) that the UE cannot reach directly.
        got = poll(lambda: lab.ue_get(vip, "/hostname"), lambda o: o.strip() == hostname)
        assert got.strip() == hostname, got
        assert lab.secret in run("curl", "-s", "-m", "5",
                                 f"http://{lab.victim_ip}/secret.txt").stdout
        assert lab.secret not in lab.ue_get(lab.victim_ip, "/secret.txt")
        before = lab.snapshot()
        # The app, with its own Mp1 token, steers its rule to the victim.
        rule = steered(etsi(traffic("a-vip", vip)), lab.victim_ip)
        got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/traffic_rules/a-vip", rule))
        assert " 400 " in got.splitlines()[0], got
        assert "dstIpAddress" in got and lab.victim_ip in got, got
        assert lab.snapshot() == before                 # iptables and dnsmasq files
        stored = lab.api.get(f"{MP1}/{a}/traffic_rules/a-vip")
        assert "dstIpAddress" not in json.dumps(stored), stored
        # After: the service address still reaches the app, never the secret.
        assert lab.secret not in lab.ue_get(vip, "/secret.txt")
        assert lab.ue_get(vip, "/hostname").strip() == hostname

    def test_mp1_put_steering_to_its_own_address_is_accepted(self, flab):
        lab, a, vip = flab, flab.ids["a"], flab.vip["a"]
        hostname = lab.in_app(a, "cat /www/hostname").strip()
        rule = steered(etsi(traffic("a-vip", vip)), lab.own_ip(a))
        got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/traffic_rules/a-vip", rule))
        assert " 200 " in got.splitlines()[0], got
        assert lab.ue_get(vip, "/hostname").strip() == hostname
        got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/traffic_rules/a-vip",
                                    etsi(traffic("a-vip", vip))))    # as it was
        assert " 200 " in got.splitlines()[0], got

    def test_an_appd_steering_elsewhere_is_400_before_the_202_and_nothing_is_made(self, flab):
        lab = flab
        folder = lab.tmp / "steer-app"
        shutil.copytree(EXAMPLES / "sample-container-app", folder)
        appd_path = folder / "Definitions/appd.yaml"
        appd = yaml.safe_load(appd_path.read_text())
        appd["appDId"] = appd["appName"] = f"steer-{lab.u}"
        rule = appd["appTrafficRule"][0]
        rule["trafficFilter"][0]["dstAddress"] = [lab.spare[3]]   # in the service range
        # MEC 010-2's spelling, as an AppD has it
        rule["dstInterface"] = [{"interfaceType": "IP", "dstIPAddress": lab.victim_ip}]
        appd["appDNSRule"][0].update(domainName=f"steer-{lab.u}.mec.local",
                                     ipAddress=lab.spare[3])
        appd_path.write_text(yaml.safe_dump(appd))
        lab.onboard_folder("steer-app", folder)
        before = lab.snapshot()
        c = lab.create(appd["appDId"])
        with pytest.raises(ApiError) as e:
            lab.api.call("POST", f"{INST}/{c}/instantiate", {
                "selectedMECHostInfo": [{"hostId": {"id": lab.host}}],
                "deploymentType": "CONTAINER"})
        assert e.value.status == 400, e.value.detail
        assert "dstIpAddress" in e.value.detail and lab.victim_ip in e.value.detail
        assert "omit dstIpAddress" in e.value.detail
        lab.nothing_made(c)
        assert lab.snapshot() == before
        assert lab.secret not in lab.ue_get(lab.spare[3], "/secret.txt")

    def test_an_instantiate_request_steering_elsewhere_is_400_before_the_202(self, flab):
        lab = flab
        before = lab.snapshot()
        c = lab.create("sample-http")
        rule = steered(traffic("c-vip", lab.spare[4]), lab.victim_ip)
        with pytest.raises(ApiError) as e:
            lab.instantiate(c, "CONTAINER", ([rule], []))
        assert e.value.status == 400, e.value.detail
        assert "dstIpAddress" in e.value.detail and lab.victim_ip in e.value.detail
        lab.nothing_made(c)
        assert lab.snapshot() == before

    # -- the core, through the REST API with the fakes ----------------------------------
    def test_core_mp1_put_to_another_address_is_400_with_nothing_applied_or_stored(self, env):
        a = env.deploy()
        own = env.mep.applied[a][0]
        before = env.state()
        e = refused(env.c.call, "PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip",
                    steered(fake_traffic(), ELSEWHERE))
        assert e.status == 400 and "dstIpAddress" in e.detail and ELSEWHERE in e.detail
        assert own in e.detail and "sample-http-vip" in e.detail, e.detail
        assert env.state() == before
        # its own address is still accepted
        env.c.call("PUT", f"{MP1}/{a}/traffic_rules/sample-http-vip",
                   steered(fake_traffic(), own))
        assert env.mep.applied[a][1][0].dst_interface[0].dst_ip_address == own

    def test_core_appd_or_request_naming_any_dst_ip_address_is_400_before_the_202(self, env):
        before = env.state()
        b = env.create()
        for to in (ELSEWHERE, "10.123.0.1"):    # .1: what the fake will give it, unknown yet
            e = refused(env.instantiate, b, appTrafficRule=[
                descriptor(steered(fake_traffic(), to))], appDNSRule=[])
            assert e.status == 400 and "dstIpAddress" in e.detail and to in e.detail
            assert "has none yet" in e.detail, e.detail
            assert env.state() == before
        assert env.c.get(f"{INST}/{b}")["instantiationState"] == "NOT_INSTANTIATED"
        assert [o for o in env.c.get(OPS) if o["appInstanceId"] == b] == []

    def test_core_appd_naming_a_dst_ip_address_is_400_before_the_202(self, env):
        appd = yaml.safe_load(CONTAINER_APPD.read_text())
        appd["appDId"] = appd["appName"] = "steer"
        appd["appTrafficRule"][0]["dstInterface"] = [{"interfaceType": "IP",
                                                      "dstIPAddress": ELSEWHERE}]
        env.onboard(CONTAINER_APPD, appd)
        before = env.state()
        b = env.create("steer")
        e = refused(env.instantiate, b)
        assert e.status == 400 and "dstIpAddress" in e.detail and ELSEWHERE in e.detail
        assert env.state() == before
        assert [o for o in env.c.get(OPS) if o["appInstanceId"] == b] == []

    def test_core_mp1_put_while_deploying_is_400(self, env):
        gate = threading.Event()
        env.cim.deploy_gate = gate
        b = env.create()
        op = env.instantiate(b)
        try:
            e = refused(env.c.call, "PUT", f"{MP1}/{b}/traffic_rules/sample-http-vip",
                        steered(fake_traffic(), "10.123.0.1"))
            assert e.status == 400 and "has none yet" in e.detail, e.detail
        finally:
            gate.set()
        assert env.c.wait_op(op, timeout=10)["operationState"] == "COMPLETED"
        assert env.mep.applied[b][1][0].dst_interface[0].dst_ip_address is None

    # -- the pure parts ----------------------------------------------------------------
    def test_driver_refuses_a_dnat_destination_other_than_the_target(self):
        rule = TrafficRule.from_etsi(steered(fake_traffic(), "10.0.0.6"))
        with pytest.raises(InvalidInput) as e:
            iptables.render_instance("P", "i", "10.0.0.5", [rule])
        assert "dstIpAddress" in e.value.detail and "10.0.0.6" in e.value.detail
        own = TrafficRule.from_etsi(steered(fake_traffic(), "10.0.0.5"))
        out = iptables.render_instance("P", "i", "10.0.0.5", [own])
        assert out["nat"][0].endswith("-j DNAT --to-destination 10.0.0.5")

    def test_foreign_target(self):
        rule = TrafficRule.from_etsi(steered(fake_traffic(), "10.0.0.6"))
        assert R.foreign_target(rule, "10.0.0.6") is None
        assert R.foreign_target(rule, "10.0.0.5") == "10.0.0.6"
        assert R.foreign_target(rule, None) == "10.0.0.6"
        assert R.foreign_target(TrafficRule.from_etsi(fake_traffic()), None) is None


class TestBareDomainRefused:
    def test_mp1_put_or_instantiate_of_the_bare_domain_is_400_naming_it(self, env):
        a = env.deploy()
        before = env.state()
        for name in ("mec.local", "MEC.local."):
            e = refused(env.c.call, "PUT", f"{MP1}/{a}/dns_rules/sample-http-dns",
                        fake_dns(name))
            assert e.status == 400 and "mec.local" in e.detail and "itself" in e.detail
            assert env.state() == before
        b = env.create()
        e = refused(env.instantiate, b, appDNSRule=[descriptor(fake_dns("mec.local"))])
        assert e.status == 400 and "mec.local" in e.detail and "itself" in e.detail
        assert env.state() == before
        assert env.c.get(f"{INST}/{b}")["instantiationState"] == "NOT_INSTANTIATED"

    def test_an_appd_claiming_the_bare_domain_is_400(self, env):
        appd = yaml.safe_load(CONTAINER_APPD.read_text())
        appd["appDId"] = appd["appName"] = "bare"
        appd["appDNSRule"][0]["domainName"] = "mec.local"
        env.onboard(CONTAINER_APPD, appd)
        before = env.state()
        b = env.create("bare")
        e = refused(env.instantiate, b)
        assert e.status == 400 and "mec.local" in e.detail and "itself" in e.detail
        assert env.state() == before

    def test_names_below_it_stay_accepted(self, env):
        a = env.deploy()
        env.c.call("PUT", f"{MP1}/{a}/dns_rules/sample-http-dns", fake_dns("x.mec.local"))
        assert env.mep.applied[a][2][0].domain_name == "x.mec.local"

    def test_below_domain(self):
        assert R.below_domain("a.mec.local", "MEC.local.")
        assert not R.below_domain("mec.local", "mec.local")
        assert not R.below_domain("evilmec.local", "mec.local")

    @pytest.mark.docker
    @pytest.mark.libvirt
    @pytest.mark.mep
    def test_real_mp1_put_of_the_bare_domain_is_400_and_nothing_changes(self, flab):
        lab, a = flab, flab.ids["a"]
        before = lab.snapshot()
        rule = etsi(dns("a-dns", "mec.local", lab.vip["a"]))
        got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/dns_rules/a-dns", rule))
        assert " 400 " in got.splitlines()[0] and "mec.local" in got, got
        assert lab.snapshot() == before
        assert lab.dig("mec.local") == ""
        assert lab.dig(lab.names["a"]) == lab.vip["a"]


class TestDescriptorSpelling:
    """An AppD's or an instantiate request's rule descriptor is MEC 010-2:
    its InterfaceDescriptor says dstIPAddress where the MEC 011 rule says
    dstIpAddress; the check of where a rule steers reads either."""

    def test_mec_010_2_names_become_the_rule_s(self):
        from mecorch.spec.rules import _descriptor
        d = _descriptor({"trafficRuleId": "r", "dstInterface": [
            {"interfaceType": "IP", "dstIPAddress": "10.0.0.1", "dstMACAddress": "02-00-00-00-00-01"}]})
        assert d["dstInterface"] == {"interfaceType": "IP", "dstIpAddress": "10.0.0.1",
                                     "dstMacAddress": "02-00-00-00-00-01"}

    def test_both_spellings_of_one_field_are_refused(self):
        from mecorch.spec.rules import _descriptor
        with pytest.raises(InvalidInput, match="names both dstIPAddress and dstIpAddress"):
            _descriptor({"dstInterface": [{"interfaceType": "IP", "dstIPAddress": "10.0.0.1",
                                           "dstIpAddress": "10.0.0.2"}]})
