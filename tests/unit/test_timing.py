"""mecorch.mepm.timing's pure parts: the time source status from adjtimex's
answer, and the NTP servers read from chrony, ntpd and systemd-timesyncd
configuration, hostile input included (nothing is invented: what does not
parse is left out), and the running daemon found in a /proc of the test's
own (a fake root directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mecorch.mepm import timing
from mecorch.mepm.timing import (
    NONTRACEABLE, STA_UNSYNC, TIME_ERROR, TRACEABLE, parse_chrony, parse_ntpd, parse_timesyncd,
    time_source_status)


@pytest.mark.parametrize("state, status", [
    ((0, 0x2001), TRACEABLE),                     # TIME_OK, STA_PLL | STA_NANO
    ((1, 0x2001), TRACEABLE),                     # TIME_INS: a leap second ahead, in sync
    ((0, STA_UNSYNC), NONTRACEABLE),
    ((0, 0x2001 | STA_UNSYNC), NONTRACEABLE),
    ((TIME_ERROR, 0), NONTRACEABLE),
    ((TIME_ERROR, STA_UNSYNC), NONTRACEABLE),
    (None, NONTRACEABLE),                          # the kernel could not be asked
])
def test_time_source_status(state, status):
    assert time_source_status(state) == status


def test_this_kernel_answers_adjtimex():
    """The real call (read only): a state and status bits whose STA_UNSYNC
    decides, as the kernel keeps them."""
    state = timing.clock_state()
    assert state is not None and 0 <= state[0] <= 5
    assert timing.current_time()["timeSourceStatus"] == time_source_status(state)


def test_now_is_the_host_clock():
    import time
    t = timing.now()
    assert 0 <= t["nanoSeconds"] < 1_000_000_000
    assert abs(t["seconds"] + t["nanoSeconds"] / 1e9 - time.time()) < 5


def server(addr, kind="DNS_NAME", low=6, high=10, prio=1, auth="NONE", key=0):
    return {"ntpServerAddrType": kind, "ntpServerAddr": addr, "minPollingInterval": low,
            "maxPollingInterval": high, "localPriority": prio, "authenticationOption": auth,
            "authenticationKeyNum": key}


def test_chrony_servers_and_pools():
    lines = ["# a comment", "! server commented.example", "pool 2.debian.pool.ntp.org iburst",
             "server 192.0.2.1 minpoll 4 maxpoll 8 key 3 prefer", "server 2001:db8::1",
             "driftfile /var/lib/chrony/chrony.drift", "SERVER upper.example"]
    assert parse_chrony(lines) == [
        server("2.debian.pool.ntp.org"),
        server("192.0.2.1", "IP_ADDRESS", 4, 8, 2, "SYMMETRIC_KEY", 3),
        server("2001:db8::1", "IP_ADDRESS", prio=3),
        server("upper.example", prio=4)]


def test_ntpd_servers():
    lines = ["server -4 time.example minpoll 5 iburst # near",
             "server 127.127.1.0", "fudge 127.127.1.0 stratum 10",    # a refclock
             "pool pool.example autokey", "restrict default kod"]
    assert parse_ntpd(lines) == [server("time.example", low=5),
                                 server("pool.example", prio=2, auth="AUTO_KEY")]


@pytest.mark.parametrize("line", [
    "server",                                      # no address
    "server $(touch /tmp/x)",                      # not an address or a name
    "server a;b.example",
    "server ex ample",                             # "ex" parses, "ample" is an option: kept
    "server bad..name",
    "server -bad.example",
    "server ünïcode.example",
    "server 1.2.3.4.5",                            # all digits: no name either
    "server " + "a" * 300,
    "server time.example minpoll",                 # an option without its value
    "server time.example minpoll x",
    "server time.example key 99999999",
    "server time.example nts",                     # NTS: no ETSI authentication option
    "server time.example\x00",
])
def test_hostile_lines_are_left_out(line):
    got = parse_chrony([line]) + parse_ntpd([line])
    if line == "server ex ample":
        assert [s["ntpServerAddr"] for s in got] == ["ex", "ex"]
    else:
        assert got == []


def test_garbage_and_floods_are_bounded():
    garbage = os.urandom(4096).decode("latin-1").splitlines()
    assert isinstance(parse_chrony(garbage), list)
    many = [f"server s{i}.example" for i in range(500)]
    assert len(parse_chrony(many)) == timing.MAX_SERVERS


def test_timesyncd_ntp_and_poll_intervals():
    main = "[Time]\nNTP=a.example 192.0.2.9\nFallbackNTP=fallback.example\n" \
           "PollIntervalMinSec=1min\nPollIntervalMaxSec=bogus\n"
    assert parse_timesyncd([main]) == [server("a.example", low=5, high=11),
                                       server("192.0.2.9", "IP_ADDRESS", 5, 11, 2)]
    # a drop-in adds; an empty assignment resets; other sections are not Time
    drop_in = "[Time]\nNTP=\nNTP=c.example\nPollIntervalMaxSec=1024\n[Other]\nNTP=x.example\n"
    assert parse_timesyncd([main, drop_in]) == [server("c.example", low=5, high=10)]
    assert parse_timesyncd(["NTP=outside.example\n"]) == []       # not in [Time]
    assert parse_timesyncd(["[Time]\nFallbackNTP=f.example\n"]) == []   # not said to be used


@pytest.mark.parametrize("span, seconds", [
    ("32", 32), ("32s", 32), ("1min", 60), ("1min 4s", 64), ("2h", 7200), ("", None),
    ("x", None), ("5 parsecs", None), ("-3", None), ("1e9", None)])
def test_timespan(span, seconds):
    assert timing._timespan(span) == seconds


def fake_root(tmp: Path, comm: str | None, files: dict[str, str | bytes]) -> Path:
    (tmp / "proc/1").mkdir(parents=True)
    (tmp / "proc/1/comm").write_text("systemd\n")
    if comm:
        (tmp / "proc/4242").mkdir()
        (tmp / "proc/4242/comm").write_text(comm + "\n")
    for name, data in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return tmp


def test_only_the_running_daemon_s_configuration_is_read(tmp_path):
    files = {"etc/chrony/chrony.conf": "server chrony.example\n",
             "etc/ntp.conf": "server ntpd.example\n",
             "etc/systemd/timesyncd.conf": "[Time]\nNTP=timesyncd.example\n"}
    for comm, name in (("chronyd", "chrony.example"), ("ntpd", "ntpd.example"),
                       ("systemd-timesyn", "timesyncd.example")):
        root = fake_root(tmp_path / comm, comm, files)
        assert [s["ntpServerAddr"] for s in timing.configured_servers(root)] == [name]
    # no daemon: none, whatever the files say
    assert timing.configured_servers(fake_root(tmp_path / "none", None, files)) == []
    caps = timing.timing_caps(fake_root(tmp_path / "none2", None, files))
    assert set(caps) == {"timeStamp"}


def test_chrony_confdir_sourcedir_and_include(tmp_path):
    root = fake_root(tmp_path, "chronyd", {
        "etc/chrony/chrony.conf": "confdir /etc/chrony/conf.d\nsourcedir /run/chrony-dhcp\n"
                                  "include /etc/chrony/extra/*.conf\n"
                                  "include /etc/../../../outside.conf\n"
                                  "server main.example\n",
        "etc/chrony/conf.d/a.conf": "server confd.example\n",
        "etc/chrony/conf.d/b.txt": "server ignored.example\n",
        "run/chrony-dhcp/eth0.sources": "server dhcp.example iburst\n",
        "etc/chrony/extra/x.conf": "server extra.example\ninclude /etc/chrony/loop.conf\n",
        "etc/chrony/loop.conf": "server nested.example\n",           # one level only
    })
    assert [s["ntpServerAddr"] for s in timing.configured_servers(root)] == [
        "confd.example", "dhcp.example", "extra.example", "main.example"]


def test_unreadable_or_huge_files_are_not_read(tmp_path):
    root = fake_root(tmp_path, "chronyd", {
        "etc/chrony/chrony.conf": "server a.example\n" * 10_000})        # > 64 KiB
    assert timing.configured_servers(root) == []
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "etc/ntp.conf").parent.mkdir(exist_ok=True)
    os.symlink(tmp_path / "fifo", tmp_path / "etc/ntp.conf")            # never opened
    (tmp_path / "proc/4242/comm").write_text("ntpd\n")
    assert timing.configured_servers(tmp_path) == []


def test_drop_ins_in_the_order_of_their_names(tmp_path):
    root = fake_root(tmp_path, "systemd-timesyn", {
        "etc/systemd/timesyncd.conf": "[Time]\nNTP=main.example\n",
        "usr/lib/systemd/timesyncd.conf.d/20-vendor.conf": "[Time]\nNTP=vendor.example\n",
        "usr/lib/systemd/timesyncd.conf.d/10-hidden.conf": "[Time]\nNTP=hidden.example\n",
        "etc/systemd/timesyncd.conf.d/10-hidden.conf": "[Time]\nNTP=\nNTP=local.example\n",
    })
    assert [s["ntpServerAddr"] for s in timing.configured_servers(root)] == [
        "local.example", "vendor.example"]
