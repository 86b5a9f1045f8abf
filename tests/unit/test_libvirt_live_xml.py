"""The libvirt VIM's live migration pieces that need no libvirtd: its
config keys, the offer's and the source's checks, the range check and the
destination XML (drivers/libvirt_vim/live.py). The migration itself:
tests/backends/test_libvirt_live.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("libvirt")

from drivers.libvirt_vim import live as L                       # noqa: E402
from drivers.libvirt_vim import xmlrender as X                  # noqa: E402
from drivers.libvirt_vim.settings import parse                  # noqa: E402
from mecorch.kernel.errors import Conflict, InvalidInput        # noqa: E402

BASE = {"state_dir": "/var/lib/x", "run_dir": "/run/x", "host_id": "h1"}


def test_live_keys_both_or_neither_and_checked():
    s = parse(BASE)
    assert (s.live_uri, s.live_address) == (None, None)
    s = parse({**BASE, "live_uri": "qemu+tcp://10.77.0.12/system", "live_address": "10.77.0.12"})
    assert (s.live_uri, s.live_address) == ("qemu+tcp://10.77.0.12/system", "10.77.0.12")
    cases = [({"live_uri": "qemu:///system", "live_address": "10.0.0.1"}, "vim.live_uri"),
             ({"live_uri": "qemu+tcp://h/session", "live_address": "10.0.0.1"}, "vim.live_uri"),
             ({"live_uri": "qemu+tcp://h/system?x=1", "live_address": "10.0.0.1"},
              "vim.live_uri"),
             ({"live_uri": "qemu+tcp://h/system"}, "vim.live_address: required"),
             ({"live_uri": "qemu+tcp://h/system", "live_address": "h"}, "vim.live_address"),
             ({"live_address": "10.0.0.1"}, "vim.live_address: set only with")]
    for extra, says in cases:
        with pytest.raises(InvalidInput, match=says):
            parse({**BASE, **extra})


OFFER = {"uri": "qemu+tcp://10.0.0.2/system", "migrate_uri": "tcp://10.0.0.2",
         "xml": "<domain/>", "disks": ["vda", "vdb"], "domain": "mecorch-i2",
         "instance_id": "i2"}


@pytest.mark.parametrize("field,value", [
    ("uri", "qemu:///system"), ("uri", "qemu+tcp://h/system;rm"),
    ("migrate_uri", "tcp://host.example"), ("migrate_uri", "unix:///x"),
    ("disks", []), ("disks", ["sda"]), ("disks", "vda"),
    ("domain", "other-i2"), ("domain", "mecorch-../x"), ("xml", None)])
def test_a_bad_offer_is_refused_naming_its_field(field, value):
    with pytest.raises(InvalidInput, match=f"offer.{field}"):
        L.check_offer({**OFFER, field: value})
    assert L.check_offer(OFFER)["disks"] == ["vda", "vdb"]


def _source_xml() -> str:
    meta = X.DomainMeta("i1", "appd", "h1", "sample", "p1", (("i1-root.qcow2", False),))
    spec = X.DomainSpec(name="mecorch-i1", virt_type="qemu", vcpu=1, memory_mb=192, pool="p1",
                        disks=("i1-root.qcow2", "i1-data.qcow2"), network="n1",
                        console_log="/run/a/vm/mecorch-i1.console.log", meta=meta,
                        env_file="/var/lib/a/vm-env/mecorch-i1.env")
    root = ET.fromstring(X.domain_xml(spec))
    ET.SubElement(root, "uuid").text = "5e943696-00a6-46eb-ade2-7899873aa743"
    nic = root.find("./devices/interface")
    ET.SubElement(nic, "mac", address="52:54:00:cf:c2:eb")
    return ET.tostring(root, encoding="unicode")


SOURCE = {"xml": _source_xml(), "addresses": [{"ip": "10.1.2.50", "mac": "52:54:00:cf:c2:eb"}],
          "network_cidr": "10.1.2.0/24"}


def test_the_dest_xml_is_this_hosts_with_the_source_identity():
    root, targets, addrs = L.source_identity(SOURCE)
    assert targets == ["vda", "vdb"] and addrs == SOURCE["addresses"]
    meta = X.DomainMeta("i2", "appd", "h2", "sample", "p2",
                        (("i2-root.qcow2", False), ("i2-data.qcow2", False)))
    out = ET.fromstring(L.dest_xml(root, disk_paths=["/p2/i2-root.qcow2", "/p2/i2-data.qcow2"],
                                   network="n2", meta=meta, env_file="/var/lib/b/e.env",
                                   console_log="/run/b/c.log"))
    # kept: name and UUID (libvirt refuses others; DEST_NAME renames), MAC, targets
    assert out.findtext("name") == "mecorch-i1"
    assert out.findtext("uuid") == "5e943696-00a6-46eb-ade2-7899873aa743"
    assert out.find("./devices/interface/mac").get("address") == "52:54:00:cf:c2:eb"
    assert [t.get("dev") for t in out.findall("./devices/disk/target")] == ["vda", "vdb"]
    # this host's: files, network, fw_cfg file, console log, metadata
    assert [(d.get("type"), d.find("source").attrib) for d in out.findall("./devices/disk")] \
        == [("file", {"file": "/p2/i2-root.qcow2"}), ("file", {"file": "/p2/i2-data.qcow2"})]
    assert out.find("./devices/interface/source").attrib == {"network": "n2"}
    assert out.find("./sysinfo/entry").get("file") == "/var/lib/b/e.env"
    assert out.find("./devices/serial/log").get("file") == "/run/b/c.log"
    got = X.parse_meta(ET.tostring(out.find("metadata")[0], encoding="unicode"))
    assert got == meta and len(out.find("metadata")) == 1
    with pytest.raises(ValueError):       # one path per disk
        L.dest_xml(root, disk_paths=["/p2/a"], network="n2", meta=meta, env_file="/e",
                   console_log="/c")


def test_a_guest_address_outside_the_range_is_a_conflict_naming_both_ranges():
    _, _, addrs = L.source_identity(SOURCE)
    L.check_range(addrs, "10.1.2.0/24", "n2", "10.1.2.0/24")
    with pytest.raises(Conflict, match=r"10\.1\.2\.50 \(the source's range 10\.1\.2\.0/24\) "
                                       r".* range 10\.9\.0\.0/24"):
        L.check_range(addrs, "10.9.0.0/24", "n2", "10.1.2.0/24")
    with pytest.raises(Conflict, match="10.1.2.1"):          # the gateway is no guest's
        L.check_range([{"ip": "10.1.2.1", "mac": "52:54:00:00:00:01"}], "10.1.2.0/24", "n2",
                      None)


@pytest.mark.parametrize("change,says", [
    ({"xml": "<domain"}, "source.xml: not XML"),
    ({"xml": "<domain type='lxc'/>"}, "source.xml: not a QEMU domain"),
    ({"addresses": []}, "source.addresses"),
    ({"addresses": [{"ip": "10.1.2.50", "mac": "52:54:00:CF"}]}, r"source.addresses\[0\].mac"),
    ({"addresses": [{"ip": "x", "mac": "52:54:00:cf:c2:eb"}]}, r"source.addresses\[0\].ip")])
def test_bad_source_facts_are_refused(change, says):
    with pytest.raises(InvalidInput, match=says):
        L.source_identity({**SOURCE, **change})
