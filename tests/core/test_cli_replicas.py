"""The CLI given several API URLs (`--api A,B`, MECORCH_API) over the real
REST API with in-memory drivers: its create and instantiate carry an
Idempotency-Key, so when the answer of the first URL is lost after the
request took effect there, the next URL answers what the first made:
one instance, one instantiation, never two. A terminate carries none
(the API takes no key there): it is not sent again."""

from __future__ import annotations

import pytest

from mecorch import cli
from support.corelab import env, onboard  # noqa: F401 - the fixture
from support.replicas import Replica, refusing_url

INST = "/app_lcm/v1/app_instances"
OPS = "/app_lcm/v1/app_lcm_op_occs"


@pytest.fixture
def lossy(env):  # noqa: F811
    """A proxy in front of the API that loses the answers of POSTs."""
    proxy = Replica(forward_to=env.c.base, lose=("POST",))
    yield proxy
    proxy.close()


def test_create_and_instantiate_are_made_once_when_an_answer_is_lost(env, lossy,  # noqa: F811
                                                                    capsys):
    onboard(env)
    api = f"{lossy.url},{env.c.base}"
    assert cli.main(["--api", api, "app", "create", "sample-http"]) == 0
    iid = capsys.readouterr().out.strip()
    (sent,) = [s for s in lossy.seen if s[0] == "POST"]
    assert sent[2]["Idempotency-Key"].startswith("cli-")
    assert [i["id"] for i in env.c.get(INST)] == [iid]          # made once
    assert cli.main(["--api", api, "app", "instantiate", iid, "--host", "default"]) == 0
    capsys.readouterr()
    posts = [s for s in lossy.seen if s[0] == "POST"]
    assert posts[-1][1] == f"{INST}/{iid}/instantiate"
    ops = [o for o in env.c.get(OPS) if o["appInstanceId"] == iid]
    assert len(ops) == 1 and ops[0]["operationState"] == "COMPLETED"
    assert env.c.get(f"{INST}/{iid}")["instantiationState"] == "INSTANTIATED"


def test_a_terminate_whose_answer_is_lost_is_not_sent_again(env, lossy,  # noqa: F811
                                                            capsys):
    onboard(env)
    iid = env.c.post(INST, {"appDId": "sample-http"})[0]["id"]
    api = f"{lossy.url},{env.c.base}"
    assert cli.main(["--api", api, "app", "instantiate", iid, "--host", "default"]) == 0
    capsys.readouterr()
    assert cli.main(["--api", api, "app", "terminate", iid, "--forceful"]) != 0
    err = capsys.readouterr().err
    assert "without an Idempotency-Key is not sent to another URL" in err
    terminates = [o for o in env.c.get(OPS)
                  if o["appInstanceId"] == iid and o["operationParams"] == "TERMINATE"]
    assert len(terminates) == 1                 # the one that got through, once


def test_mecorch_api_names_the_urls(env, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MECORCH_API", f"{refusing_url()},{env.c.base}")
    assert cli.main(["app", "list"]) == 0
    monkeypatch.setenv("MECORCH_API", "127.0.0.1:8080")
    assert cli.main(["app", "list"]) != 0
    assert "must be http(s)://HOST:PORT" in capsys.readouterr().err
