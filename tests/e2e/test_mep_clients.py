"""The MEP for real clients (issue 12), on the real backends: a `mecorch
serve` of its own (host id, docker network, libvirt pool + network, chain
prefix, service range, dnsmasq port: all unique) with two container apps
and one VM app, and a UE in a network namespace behind the data-plane
address. What is shown:

- from inside a container app (its default resolver: Docker's 127.0.0.11,
  which forwards to the MEP on the network's gateway) and from inside the VM
  app (the resolver DHCP gave it), another app's DNS name resolves to its
  service address, and HTTP to that address reaches the app (traffic rule);
  an unknown name is refused (no upstream configured);
- a UE in a netns resolves through the data-plane address and reaches the app;
- a container app and the VM app (which read MEC_MP1_URL, instance id and
  token from their environment / SMBIOS OEM strings) read their rules over
  Mp1 on their gateway with their own token, change one, the change takes
  effect; their token on another instance's routes is a 403;
- every ownership case is refused with its status and nothing applied (the
  MEP's chains and its dnsmasq files byte-identical), including two
  concurrent instantiations racing for one address: exactly one wins.
"""

from __future__ import annotations

import threading

import pytest

from mecorch.kernel.client import ApiError

from conftest import run
from support.meplab import (  # noqa: F401
    MP1, app_mp1, dns, etsi, poll, running, traffic)

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


def http_get(address: str) -> str:
    """A busybox script fetching http://address/ (busybox-static's wget
    crashes in glibc's NSS without its modules: nc speaks HTTP instead)."""
    return f"printf 'GET / HTTP/1.0\\r\\nHost: {address}\\r\\n\\r\\n' | nc -w 5 {address} 80"


@pytest.fixture(scope="module")
def lab():
    with running("mep12", (("a", "sample-http", "CONTAINER"), ("b", "sample-http", "CONTAINER"),
                           ("v", "sample-vm", "VM"))) as lab:
        yield lab


# -- DNS and traffic where clients look ----------------------------------------------------

def test_container_app_resolves_and_reaches_other_apps_through_its_default_resolver(lab):
    a = lab.ids["a"]
    assert "nameserver 127.0.0.11" in lab.in_app(a, "cat /etc/resolv.conf")
    for key, body in (("b", "mecorch sample container"), ("v", "mecorch sample vm")):
        out = poll(lambda: lab.in_app(a, f"nslookup {lab.names[key]}"),
                   lambda o: lab.vip[key] in o)
        assert lab.vip[key] in out, out
        got = lab.in_app(a, http_get(lab.vip[key]))
        assert body in got, got
    out = lab.in_app(a, f"nslookup nowhere-{lab.u}.example.org")
    assert "can't resolve" in out or "REFUSED" in out or "NXDOMAIN" in out, out


def test_vm_app_resolves_and_reaches_other_apps_through_its_dhcp_resolver(lab):
    for key in ("a", "b"):
        out = lab.in_vm(f"resolve={lab.names[key]}")
        assert lab.vip[key] in out, out
        assert "mecorch sample container" in lab.in_vm(f"fetch=http://{lab.vip[key]}/")
    out = lab.in_vm(f"resolve=nowhere-{lab.u}.example.org")
    assert "REFUSED" in out, out                       # no upstream configured


def test_ue_in_a_netns_resolves_through_the_data_plane_address(lab):
    for key, body in (("a", "mecorch sample container"), ("v", "mecorch sample vm")):
        got = run("ip", "netns", "exec", lab.ue_ns, "dig", "+short", "+time=2", "+tries=2",
                  f"@{lab.dp}", lab.names[key]).stdout.strip()
        assert got == lab.vip[key]
        out = run("ip", "netns", "exec", lab.ue_ns, "curl", "-s", "-m", "5",
                  f"http://{lab.vip[key]}/", check=False).stdout
        assert body in out
    refused = run("ip", "netns", "exec", lab.ue_ns, "dig", "+time=2", "+tries=1", f"@{lab.dp}",
                  f"nowhere-{lab.u}.example.org", check=False).stdout
    assert "status: REFUSED" in refused


# -- Mp1 from inside the apps --------------------------------------------------------------

def test_container_app_reads_and_changes_its_rules_over_mp1_with_its_own_token(lab):
    a, b = lab.ids["a"], lab.ids["b"]
    env = lab.in_app(a, "echo $MEC_MP1_URL $MEC_APP_INSTANCE_ID")
    assert env.split()[1] == a and "127.0.0.1" not in env.split()[0], env
    got = lab.in_app(a, app_mp1("GET", f"applications/{a}/dns_rules"))
    assert " 200 " in got.splitlines()[0] and lab.names["a"] in got, got
    new_ip = lab.spare[0]
    rule = etsi(dns("a-dns", lab.names["a"], new_ip))
    got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/dns_rules/a-dns", rule))
    assert " 200 " in got.splitlines()[0], got
    assert poll(lambda: lab.dig(lab.names["a"]), lambda o: o == new_ip) == new_ip
    # traffic: move its VIP to a spare address of the range; the old one stops
    moved = etsi(traffic("a-vip", lab.spare[0]))
    got = lab.in_app(a, app_mp1("PUT", f"applications/{a}/traffic_rules/a-vip", moved))
    assert " 200 " in got.splitlines()[0], got
    out = lab.in_app(b, http_get(lab.spare[0]))
    assert "mecorch sample container" in out, out
    for path in (f"applications/{b}/dns_rules", f"applications/{lab.ids['v']}/traffic_rules"):
        got = lab.in_app(a, app_mp1("GET", path))
        assert " 403 " in got.splitlines()[0], got


def test_vm_app_reads_its_oem_strings_and_changes_its_rules_over_mp1(lab):
    v = lab.ids["v"]
    env = lab.in_vm("env")
    assert f"MEC_APP_INSTANCE_ID={v}" in env and "MEC_APP_TOKEN=(given)" in env, env
    assert "127.0.0.1" not in env
    got = lab.in_vm(f"mp1=applications/{v}/dns_rules")
    assert " 200 " in got.splitlines()[0] and lab.names["v"] in got, got
    new_ip = lab.spare[1]
    got = lab.in_vm(f"mp1=applications/{v}/dns_rules/v-dns",
                    etsi(dns("v-dns", lab.names["v"], new_ip)))
    assert " 200 " in got.splitlines()[0], got
    assert poll(lambda: lab.dig(lab.names["v"]), lambda o: o == new_ip) == new_ip
    got = lab.in_vm(f"mp1=applications/{v}/traffic_rules/v-vip",
                    etsi(traffic("v-vip", lab.spare[1])))
    assert " 200 " in got.splitlines()[0], got
    out = poll(lambda: run("curl", "-s", "-m", "3", f"http://{lab.spare[1]}/", check=False).stdout,
               lambda o: "mecorch sample vm" in o)
    assert "mecorch sample vm" in out
    got = lab.in_vm(f"mp1=applications/{lab.ids['a']}/dns_rules")
    assert " 403 " in got.splitlines()[0], got


# -- ownership: refused, nothing applied ----------------------------------------------------

def test_every_ownership_case_is_refused_and_nothing_changes(lab):
    a, b, v = lab.ids["a"], lab.ids["b"], lab.ids["v"]
    before = lab.snapshot()
    operator = lab.api
    cases = [  # (path, rule, status, what the detail must name)
        (f"{MP1}/{a}/traffic_rules/a-vip", etsi(traffic("a-vip", "192.0.2.77")), 400,
         lab.service),
        (f"{MP1}/{a}/traffic_rules/a-vip", etsi(traffic("a-vip", lab.vip["b"])), 409, b),
        (f"{MP1}/{a}/dns_rules/a-dns", etsi(dns("a-dns", lab.names["v"], lab.vip["a"])), 409, v),
        (f"{MP1}/{a}/dns_rules/a-dns", etsi(dns("a-dns", f"a-{lab.u}.example.org",
                                                lab.vip["a"])), 400, "mec.local"),
        (f"{MP1}/{v}/traffic_rules/v-vip", etsi(traffic("v-vip", lab.vip["b"])), 409, b),
    ]
    for path, rule, status, named in cases:
        with pytest.raises(ApiError) as e:
            operator.call("PUT", path, rule)
        assert e.value.status == status and named in e.value.detail, (path, e.value.detail)
        assert lab.snapshot() == before
    # the same from an AppD/request at instantiation: refused at the POST
    c = lab.create("sample-http")
    for rules, status, named in (
            (([traffic("c", lab.vip["b"])], []), 409, b),
            # outside every host's range: placement refuses it first (409
            # naming each host's range), before the ledger's 400
            (([traffic("c", "192.0.2.78")], []), 409, lab.service),
            (([], [dns("c", lab.names["v"], lab.spare[5])]), 409, v),
            (([], [dns("c", "c.example.org", lab.spare[5])]), 400, "mec.local")):
        with pytest.raises(ApiError) as e:
            lab.instantiate(c, "CONTAINER", rules)
        assert e.value.status == status and named in e.value.detail, e.value.detail
        assert lab.snapshot() == before
    # replicas of one app may share a name (b is sample-http like a)
    shared = lab.api.wait_op(lab.instantiate(c, "CONTAINER", (
        [traffic("c", lab.spare[6])], [dns("c", lab.names["b"], lab.spare[6])])))
    assert shared["operationState"] == "COMPLETED", shared.get("error")
    lab.terminate(c)


def test_two_instantiations_racing_for_one_address_exactly_one_wins(lab):
    before = lab.snapshot()
    ids = [lab.create("sample-http") for _ in range(2)]
    results: dict[str, object] = {}

    def go(iid: str) -> None:
        try:
            results[iid] = lab.instantiate(iid, "CONTAINER",
                                           ([traffic("race", lab.spare[9])], []))
        except ApiError as e:
            results[iid] = e
    threads = [threading.Thread(target=go, args=(iid,)) for iid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [i for i in ids if isinstance(results[i], dict)]
    lost = [i for i in ids if isinstance(results[i], ApiError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert results[lost[0]].status == 409 and won[0] in results[lost[0]].detail
    assert lab.api.wait_op(results[won[0]])["operationState"] == "COMPLETED"
    lab.terminate(won[0])
    assert lab.snapshot() == before
