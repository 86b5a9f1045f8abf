"""Validators: allow-lists that keep hostile text out of commands and files."""

import pytest

from mecorch.kernel import validate as v
from mecorch.kernel.errors import InvalidInput

HOSTILE = ["", "a\nb", "a b", "-rf", "--address=/x/1.2.3.4", "a#b", "../etc", "a/b",
           "x" * 65, "é", "a\x00b", "$(id)", "`id`", "a;b", ".hidden"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_ident_refuses_hostile_text(bad):
    with pytest.raises(InvalidInput):
        v.ident(bad, "id")


@pytest.mark.parametrize("good", ["a", "app-1", "A_b.c", "0" * 64])
def test_ident_accepts(good):
    assert v.ident(good, "id") == good


@pytest.mark.parametrize("bad", ["-a.com", "a..b", "a b.com", "a\n.com", "x" * 64 + ".com",
                                 "é.com", "a_b.com", "*.a.com", "a.com#"])
def test_domain_name_refuses(bad):
    with pytest.raises(InvalidInput):
        v.domain_name(bad)


def test_domain_name_normalises():
    assert v.domain_name("App-1.Example.COM.") == "app-1.example.com"


@pytest.mark.parametrize("ref,parts", [
    ("127.0.0.1:5000/mecorch/sample-http:1.0", ("127.0.0.1:5000", "mecorch/sample-http", "1.0")),
    ("busybox", (None, "busybox", "latest")),
])
def test_image_ref(ref, parts):
    assert v.split_image_ref(ref) == parts


@pytest.mark.parametrize("bad", ["UPPER/x", "a b", "a:--x", "-x", "x:" + "t" * 200, "a\nb"])
def test_image_ref_refuses(bad):
    with pytest.raises(InvalidInput):
        v.image_ref(bad)


def test_addresses_ports_numbers():
    assert v.ip_address("10.0.0.1", "ip", 4) == "10.0.0.1"
    assert v.network("10.0.0.7/24", "net") == "10.0.0.0/24"
    with pytest.raises(InvalidInput):
        v.ip_address("::1", "ip", 4)
    with pytest.raises(InvalidInput):
        v.ip_address("1.2.3.4 -j ACCEPT", "ip")
    for bad in (0, 65536, "80", True, 1.5):
        with pytest.raises(InvalidInput):
            v.port(bad, "port")
    assert v.number(2, "cpu", 0.1, 8) == 2.0


def test_env_and_text():
    assert v.env({"A_1": "x y"}) == {"A_1": "x y"}
    for bad in ({"1A": "x"}, {"A": 1}, {"A": "a\x00"}, ["A"]):
        with pytest.raises(InvalidInput):
            v.env(bad)
    with pytest.raises(InvalidInput):
        v.text("a\rb", "name")


def test_sha256():
    assert v.sha256("AB" * 32) == "ab" * 32
    with pytest.raises(InvalidInput):
        v.sha256("xyz")
