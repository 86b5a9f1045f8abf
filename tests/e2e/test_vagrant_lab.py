"""Fast checks of the Vagrant lab (vagrant/): what CI can afford.

The lab itself (`bash vagrant/smoke.sh`: a locally built box, two TCG
guests, an MEO on the workstation driving them) takes many minutes and is
run by hand; here every script of it passes shellcheck, every host layout
passes `vagrant validate` with the real vagrant-libvirt plugin, the lab's
secrets are what the MEPMs and the MEO need (a CA-signed certificate for
each host's private address, distinct tokens, 0600), bad settings are
refused by name, and the KVM/TCG probe is run for real.

Vagrant, vagrant-libvirt and shellcheck come from Debian's packages: a
missing one is installed here (`--no-install-recommends`); if that fails,
the test fails with the command to run. Nothing is skipped.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import run

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
SCRIPTS = ["box/build.sh", "accel-probe.sh", "edge-up.sh", "lab-secrets.sh",
           "meo-config.sh", "smoke.sh", "live-smoke.sh"]
PACKAGES = ["shellcheck", "vagrant", "vagrant-libvirt"]


def _installed(pkg: str) -> bool:
    res = run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return "install ok installed" in res.stdout


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [p for p in PACKAGES if not _installed(p)]
    if missing:
        res = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                              "-o", "DPkg::Lock::Timeout=600", *missing],
                             capture_output=True, text=True,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if res.returncode != 0:
            pytest.fail(f"could not install {' '.join(missing)}: run `apt-get install "
                        f"--no-install-recommends {' '.join(missing)}` as root\n"
                        f"{res.stderr[-2000:]}", pytrace=False)


def _vagrant(tmp: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "VAGRANT_CWD": str(VAGRANT_DIR),
            "VAGRANT_DOTFILE_PATH": str(tmp / "dot"), "MECORCH_VLAB_DIR": str(tmp / "lab"),
            **env}
    for k in [k for k in full if k.startswith("MECORCH_") and k not in env
              and k != "MECORCH_VLAB_DIR"]:
        del full[k]                                     # only what the test sets
    return subprocess.run(["vagrant", *argv], capture_output=True, text=True, env=full,
                          timeout=300)


def test_every_lab_script_passes_shellcheck(tools):
    paths = [str(VAGRANT_DIR / s) for s in SCRIPTS]
    res = run("shellcheck", "--shell=bash", *paths, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("edges,accel", [(1, "tcg"), (2, "tcg"), (3, "kvm")])
def test_every_host_layout_validates_and_gets_its_secrets(tools, tmp_path, edges, accel):
    res = _vagrant(tmp_path, "validate", MECORCH_EDGES=str(edges), MECORCH_VAGRANT_ACCEL=accel)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Vagrantfile validated successfully" in res.stdout
    lab = tmp_path / "lab"
    rows = [line.split("\t") for line in (lab / "edges.tsv").read_text().splitlines()]
    assert rows == [[f"edge{k}", f"vlab-edge{k}", f"10.77.0.{10 + k}", "8443"]
                    for k in range(1, edges + 1)]
    tokens = {(lab / "meo.token").read_text()}
    for name, _, ip, _ in rows:
        host = lab / name
        # the MEPM's certificate is the lab CA's, for exactly its private address
        verify = run("openssl", "verify", "-CAfile", str(lab / "ca.pem"), str(host / "mepm.pem"))
        assert verify.stdout.strip().endswith(": OK")
        san = run("openssl", "x509", "-in", str(host / "mepm.pem"), "-noout", "-ext",
                  "subjectAltName").stdout
        assert f"IP Address:{ip}" in san and san.count("IP Address:") == 1, san
        key_matches = run("openssl", "x509", "-in", str(host / "mepm.pem"), "-noout",
                          "-pubkey").stdout == run("openssl", "pkey", "-in",
                                                   str(host / "mepm.key"), "-pubout").stdout
        assert key_matches
        for secret in ("mepm.key", "mepm.tokens"):
            mode = stat.S_IMODE((host / secret).stat().st_mode)
            assert mode == 0o600, (secret, oct(mode))
        token = (host / "mepm.tokens").read_text()
        assert len(token.strip()) == 48
        tokens.add(token)
        # what goes into that guest: its own files only, never the CA's key
        assert sorted(p.name for p in host.iterdir()) == [
            "ca.pem", "mepm.key", "mepm.pem", "mepm.tokens"]
    assert len(tokens) == edges + 1                     # all distinct
    # made once: a second load keeps them
    before = (lab / "edge1" / "mepm.pem").read_bytes()
    res = _vagrant(tmp_path, "validate", MECORCH_EDGES=str(edges), MECORCH_VAGRANT_ACCEL=accel)
    assert res.returncode == 0 and (lab / "edge1" / "mepm.pem").read_bytes() == before


@pytest.mark.parametrize("env,named", [
    ({"MECORCH_EDGES": "0"}, "MECORCH_EDGES must be between 1 and 9, not 0"),
    ({"MECORCH_EDGES": "two"}, 'invalid value for Integer(): "two"'),
    ({"MECORCH_VAGRANT_ACCEL": "hvf"}, 'MECORCH_VAGRANT_ACCEL must be kvm or tcg, not "hvf"'),
])
def test_bad_settings_are_refused_by_name(tools, tmp_path, env, named):
    res = _vagrant(tmp_path, "validate", **{"MECORCH_VAGRANT_ACCEL": "tcg", **env})
    assert res.returncode != 0
    assert named in res.stdout + res.stderr


def test_lab_secrets_refuse_bad_input(tmp_path):
    for argv, named in ((["edge1", "10.77.0.300x"], "bad IPv4 address '10.77.0.300x'"),
                        (["../x", "10.77.0.11"], "bad host name '../x'")):
        res = run("bash", str(VAGRANT_DIR / "lab-secrets.sh"), str(tmp_path), *argv, check=False)
        assert res.returncode == 2 and named in res.stderr
    assert not list(tmp_path.iterdir())


def test_meo_config_refuses_without_hosts_and_off_loopback(tools, tmp_path):
    env = {**os.environ, "VAGRANT_CWD": str(VAGRANT_DIR), "MECORCH_VAGRANT_ACCEL": "tcg",
           "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "MECORCH_VLAB_DIR": str(tmp_path)}
    script = str(VAGRANT_DIR / "meo-config.sh")
    res = subprocess.run(["bash", script, "0.0.0.0:8780"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1 and "LISTEN must be a loopback address:port" in res.stderr
    res = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1 and "no edge host is up" in res.stderr
    assert not (tmp_path / "meo.yaml").exists()


def test_accel_is_probed_by_booting_and_cached_per_boot(tools, tmp_path, sample_vm):
    """The real probe: on this project's machines KVM guests hang, so tcg;
    on a machine where KVM works, kvm. Either way the Vagrantfile caches
    the probe's answer with this boot's id and picks the matching layout."""
    probe = run("bash", str(VAGRANT_DIR / "accel-probe.sh"), sample_vm["path"], "20",
                check=False)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() in ("kvm", "tcg")
    assert probe.stderr.startswith(f"accel-probe: {probe.stdout.strip()}: ")
    res = _vagrant(tmp_path, "validate", MECORCH_EDGES="1")
    assert res.returncode == 0, res.stdout + res.stderr
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (tmp_path / "lab" / "accel").read_text().split() == [probe.stdout.strip(), boot_id]
    # no image to boot: tcg, and the reason names the missing image
    missing = run("bash", str(VAGRANT_DIR / "accel-probe.sh"), str(tmp_path / "none.qcow2"),
                  check=False)
    assert missing.stdout.strip() == "tcg"
    assert "none.qcow2" in missing.stderr or "/dev/kvm" in missing.stderr
