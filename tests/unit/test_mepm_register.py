"""An MEPM registering with one of several MEO URLs (mecorch.mepm.register,
`mepm.meo_url` as a list: the replicas of one MEO), against real HTTP
servers on loopback: a replica that is gone or answers 5xx is passed over
for the next; a 4xx is the MEO's refusal, asked again of the same one,
never of another; each URL is held to the token rule, naming its key."""

from __future__ import annotations

import time

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.mepm import register
from mecorch.mepm.register import Registration
from support.replicas import Replica, refusing_url


class Server:
    server_address = ("127.0.0.1", 8181)


def registration(urls) -> Registration:
    cfg = config.load()
    cfg["mepm"]["meo_url"] = urls
    return Registration(cfg, Server())


@pytest.fixture
def replicas():
    made: list[Replica] = []

    def make(status: int) -> Replica:
        made.append(Replica(status, {"hostId": "default"} if status < 300 else None))
        return made[-1]
    yield make
    for r in made:
        r.close()


def run(reg: Registration, timeout_s: float = 5) -> bool:
    reg.start()
    try:
        return reg.registered.wait(timeout_s)
    finally:
        reg.stop()


def test_a_gone_or_failing_replica_is_passed_over_for_the_next(replicas, monkeypatch):
    monkeypatch.setattr(register, "RETRY_S", 30.0)       # no second round within the test
    failing, good, last = replicas(503), replicas(201), replicas(201)
    reg = registration([refusing_url(), failing.url, good.url, last.url])
    t0 = time.monotonic()
    assert run(reg)
    assert time.monotonic() - t0 < 3                     # at once, not after RETRY_S
    assert reg.meo_url == good.url
    assert failing.paths() == ["POST /mecorch/v1/hosts"]
    assert good.seen[0][3] == {"hostId": "default", "url": "http://127.0.0.1:8181"}
    assert last.seen == []                               # the first that answers takes it


def test_a_refusal_is_the_meos_answer_not_a_reason_to_hop(replicas, monkeypatch):
    monkeypatch.setattr(register, "RETRY_S", 0.2)
    refusing, other = replicas(400), replicas(201)
    reg = registration([refusing.url, other.url])
    assert not run(reg, 1.0)
    assert other.seen == []                              # never asked
    assert len(refusing.seen) >= 3                       # asked again, every RETRY_S
    # the refusal lifted (the MEO can reach this MEPM now): registered there
    refusing.status, refusing.body = 201, {"hostId": "default"}
    reg = registration([refusing.url, other.url])
    assert run(reg) and reg.meo_url == refusing.url and other.seen == []


def test_already_known_counts_as_registered(replicas):
    known = replicas(409)
    known.body = {"status": 409, "title": "Conflict",
                  "detail": "edge host 'default' is already known at http://127.0.0.1:8181"}
    reg = registration([known.url])
    assert run(reg) and reg.meo_url == known.url


def test_every_url_gone_starts_again_from_the_first(replicas, monkeypatch):
    monkeypatch.setattr(register, "RETRY_S", 0.2)
    first, second = replicas(502), replicas(503)
    reg = registration([first.url, second.url])
    assert not run(reg, 1.0)
    assert len(first.seen) >= 2 and len(second.seen) >= 2
    assert abs(len(first.seen) - len(second.seen)) <= 1      # round after round, in order


def test_one_url_is_still_one_string(replicas):
    good = replicas(201)
    reg = registration(good.url)
    assert reg.meo_urls == [good.url] and run(reg) and reg.meo_url == good.url


def test_each_url_is_held_to_the_token_rule_naming_its_key(tmp_path):
    f = tmp_path / "mepm.yaml"
    f.write_text("role: mepm\nmepm: {meo_url: ['https://10.0.0.1:8443', "
                 "'http://10.0.0.2:8080']}\n")
    with pytest.raises(InvalidInput, match=r"mepm.meo_url\[1\] http://10.0.0.2:8080 is plain "
                                           r"http"):
        config.load(f)
    f.write_text("role: mepm\nmepm: {meo_url: ['https://10.0.0.1:8443', "
                 "'http://127.0.0.1:8080']}\n")
    assert config.load(f)["mepm"]["meo_url"] == ["https://10.0.0.1:8443",
                                                 "http://127.0.0.1:8080"]
    for bad in ("[]", "[1]", "{a: b}", "8080"):
        f.write_text(f"role: mepm\nmepm: {{meo_url: {bad}}}\n")
        with pytest.raises(InvalidInput, match="mepm.meo_url must be a URL or a non-empty "
                                               "list of URLs"):
            config.load(f)
    cfg = config.load()         # past config.load (a config made in code): refused too
    cfg["mepm"]["meo_url"] = ["http://127.0.0.1:1", "http://10.178.0.2:8000"]
    with pytest.raises(InvalidInput, match=r"mepm.meo_url\[1\] http://10.178.0.2:8000"):
        Registration(cfg, Server())
    cfg["mepm"]["meo_url"] = ["http://127.0.0.1:1", "ftp://127.0.0.1:2"]
    with pytest.raises(InvalidInput, match=r"mepm.meo_url\[1\]"):
        Registration(cfg, Server())
