"""The API client with several URLs (mecorch.kernel.client: `--api A,B`,
MECORCH_API; the replicas of one MEO), against real HTTP servers on
loopback: a request goes on to the next URL when one cannot be reached or
answers 503, but only when sending it again is safe (it never left, an
idempotent method, a POST with an Idempotency-Key); the client stays
with the URL that answered."""

from __future__ import annotations

import pytest

from mecorch.kernel.client import ApiError, Client
from mecorch.kernel.errors import InvalidInput, MecorchError
from support.replicas import DROP, Replica, refusing_url

INST = "/app_lcm/v1/app_instances"


@pytest.fixture
def replicas():
    made: list[Replica] = []

    def make(status: int = 200, body=None) -> Replica:
        made.append(Replica(status, body if body is not None else {"id": "x"}
                            if status < 300 else None))
        return made[-1]
    yield make
    for r in made:
        r.close()


def client(*urls: str) -> Client:
    return Client(",".join(urls), token="", timeout=5)


def test_a_gone_replica_is_passed_over_and_the_client_stays_with_the_next(replicas):
    gone, good, spare = refusing_url(), replicas(), replicas()
    c = client(gone, good.url, spare.url)
    assert c.get(INST) == {"id": "x"} and c.base == good.url
    c.get(INST)
    assert good.paths() == [f"GET {INST}"] * 2 and spare.seen == []


def test_a_503_goes_on_for_what_may_be_sent_again(replicas):
    busy, good = replicas(503), replicas()
    c = client(busy.url, good.url)
    assert c.get(INST) == {"id": "x"}
    c.base = busy.url                   # back to the first, for the POSTs
    c.post(INST, {"appDId": "a"}, {"Idempotency-Key": "k1"})
    assert busy.paths()[-1] == f"POST {INST}" and good.seen[-1][2]["Idempotency-Key"] == "k1"
    c.base = busy.url
    with pytest.raises(ApiError) as e:  # no key: the 503 is the answer
        c.post(INST, {"appDId": "a"})
    assert e.value.status == 503 and len(good.seen) == 2


def test_a_post_that_never_left_goes_on_without_a_key(replicas):
    good = replicas(201)
    c = client(refusing_url(), good.url)
    assert c.post(INST, {"appDId": "a"})[0] == {"id": "x"}
    assert good.seen[0][3] == {"appDId": "a"}


def test_a_post_that_may_have_arrived_goes_on_only_with_a_key(replicas):
    lost, good = replicas(DROP), replicas(201)
    c = client(lost.url, good.url)
    with pytest.raises(MecorchError, match="without an Idempotency-Key is not sent to "
                                           "another URL"):
        c.post(INST, {"appDId": "a"})
    assert lost.paths() == [f"POST {INST}"] and good.seen == []
    c.post(INST, {"appDId": "a"}, {"Idempotency-Key": "k2"})
    assert good.seen[0][2]["Idempotency-Key"] == "k2" and good.seen[0][3] == {"appDId": "a"}
    # idempotent methods too
    c.base = lost.url
    c.call("DELETE", f"{INST}/x")
    assert good.paths()[-1] == f"DELETE {INST}/x"


def test_a_refusal_is_the_answer_not_a_reason_to_go_on(replicas):
    refusing, good = replicas(409), replicas()
    c = client(refusing.url, good.url)
    with pytest.raises(ApiError) as e:
        c.get(INST)
    assert e.value.status == 409 and good.seen == []


def test_every_url_gone_names_each(replicas):
    a, b = refusing_url(), refusing_url()
    with pytest.raises(MecorchError, match=f"cannot reach mecorch at any of its URLs: {a}: "
                                           f".*; {b}: "):
        client(a, b).get(INST)
    with pytest.raises(MecorchError, match=f"cannot reach mecorch at {a}: "):
        client(a).get(INST)


def test_the_urls_are_checked(replicas):
    for bad in ("", "127.0.0.1:8080", "http://a:1,,http://b:2", "ftp://h:1",
                "http://h:1,http://h:1/"):
        with pytest.raises(InvalidInput):
            Client(bad)
    assert Client(" http://h:1/ , https://g:2").bases == ["http://h:1", "https://g:2"]
