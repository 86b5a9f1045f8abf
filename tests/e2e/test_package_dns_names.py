"""A public DNS name an app's package declares, on the real backends: a
`mecorch serve` of its own (Docker containers, the Linux MEP with a
service range and a data-plane address, MEC domain mec.local, no
upstream) and a UE in a network namespace behind that address.

- a package whose AppD declares `video.example.com` (outside mec.local)
  deploys as a container: the name is its package's grant;
- another app's container resolves it through its default resolver
  (Docker's, forwarding to the MEP's dnsmasq on the app network's
  gateway), and the UE through the data-plane address, to the instance's
  service address, where the UE reaches the app; its AAAA is an empty
  answer, not refused (the name is the MEP's: nothing of it asked
  elsewhere); a name nobody holds is refused;
- a second app, whose package does not declare the name, cannot claim it
  by an Mp1 PUT (409 naming the holder) and the first still answers.
The decision itself: tests/core/test_package_dns_grants.py.
"""

from __future__ import annotations

import pytest

from mecorch.kernel.client import ApiError
from support import lab as thelab
from support.meplab import MP1, in_app, poll

pytestmark = [pytest.mark.docker, pytest.mark.mep]
INST = "/app_lcm/v1/app_instances"
VIDEO = "video.example.com"


@pytest.fixture(scope="module")
def lab():
    lab = thelab.UeLab("pdn", orchestrator={"reconcile_interval_s": 0})
    try:
        lab.start()
        thelab.onboard_variant(lab.c, lab.dir, "sample-container-app", appDId="video-app",
                               appDNSRule=[{"dnsRuleId": "video-dns", "domainName": VIDEO,
                                            "ipAddressType": "IP_V4"}])
        thelab.onboard_samples(lab.c, lab.dir, folders=("sample-container-app",))
        yield lab
    finally:
        left = lab.close()
    assert left == [], f"left behind after the API cleanup: {left}"


def _deploy(lab, app_d_id: str) -> str:
    iid = lab.c.post(INST, {"appDId": app_d_id})[0]["id"]
    op, _ = lab.c.post(f"{INST}/{iid}/instantiate", {"selectedMECHostInfo": lab.selected})
    op = lab.c.wait_op(op, timeout=120)
    assert op["operationState"] == "COMPLETED", (op.get("error"), lab.serve.log_tail())
    return iid


def test_a_declared_public_name_answers_the_edge_instance_and_stays_its_own(lab):
    video = _deploy(lab, "video-app")
    addr = lab.c.get(f"{INST}/{video}")["allocatedResources"]["serviceAddress"]
    assert lab.c.get(f"{MP1}/{video}/dns_rules")[0]["domainName"] == VIDEO
    other = _deploy(lab, "sample-http")
    # another app's container, through its default resolver (the gateway's dnsmasq)
    out = poll(lambda: in_app(other, f"nslookup {VIDEO}"), lambda o: addr in o)
    assert addr in out, out
    # the UE, through the data-plane address: the name, then the app
    assert poll(lambda: lab.dig(VIDEO), lambda o: o == f"NOERROR {addr}") == f"NOERROR {addr}"
    assert lab.dig(VIDEO, "AAAA") == "NOERROR"
    got = lab.ue.exec("curl", "-s", "-m", "5", f"http://{addr}/", check=False).stdout
    assert "mecorch sample container" in got, got
    assert lab.dig(f"nobody-{lab.names.tag}.example.com") == "REFUSED"
    # the second app's package does not declare the name: the holder's 409
    rule = {**lab.c.get(f"{MP1}/{other}/dns_rules")[0], "domainName": VIDEO}
    with pytest.raises(ApiError) as e:
        lab.c.call("PUT", f"{MP1}/{other}/dns_rules/{rule['dnsRuleId']}", rule)
    assert e.value.status == 409 and video in e.value.detail, e.value.detail
    assert lab.dig(VIDEO) == f"NOERROR {addr}"
    assert addr in in_app(other, f"nslookup {VIDEO}")
