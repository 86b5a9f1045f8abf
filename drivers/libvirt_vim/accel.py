"""KVM or TCG: decided by booting a guest, not by /dev/kvm being there.

On this project's machines /dev/kvm opens fine but a KVM guest hangs in
its kernel's real-mode setup ("Probing EDD"); a trivial boot sector runs,
so only a real guest is a fair test. The probe boots a throw-away overlay
of a repository image with `type='kvm'` and waits for a known point every
mecorch guest reaches: a DHCP lease on the mecorch network. A working KVM
gets there well before TCG would; no lease within the timeout means TCG.
The result is cached in `<state_dir>/accel-probe.json`.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
import xml.etree.ElementTree as ET

import libvirt

from mecorch.kernel.errors import BackendError, Timeout

from . import network as N
from . import storage as S
from . import xmlrender as X

KVM, TCG = "kvm", "tcg"
VIRT_TYPE = {KVM: "kvm", TCG: "qemu"}     # libvirt's <domain type=...>


def load(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return data if data.get("accel") in (KVM, TCG) else None


def save(path: str, result: dict) -> None:
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".accel-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def kvm_offered(conn) -> str | None:
    """None if libvirt offers KVM guests, else why not."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    caps = ET.fromstring(conn.getCapabilities())
    if not caps.findall(".//guest/arch/domain[@type='kvm']"):
        return "libvirt offers no kvm domain type"
    return None


def probe(conn, pool, base, network: str, console_dir: str, timeout_s: float) -> dict:
    """Boot `base` under KVM; {"accel", "reason", "seconds"}. Leaves nothing."""
    started = time.monotonic()

    def result(accel: str, reason: str) -> dict:
        return {"accel": accel, "reason": reason, "image_volume": base.name(),
                "seconds": round(time.monotonic() - started, 1), "probed_at": time.time()}

    why_not = kvm_offered(conn)
    if why_not:
        return result(TCG, why_not)
    tag = secrets.token_hex(4)
    overlay_name = f"probe-{tag}.qcow2"
    os.makedirs(console_dir, exist_ok=True)
    spec = X.DomainSpec(name=f"{X.DOMAIN_PREFIX}probe-{tag}", virt_type="kvm", vcpu=1,
                        memory_mb=256, pool=pool.name(), disks=(overlay_name,),
                        network=network,
                        console_log=os.path.join(console_dir, "accel-probe.console.log"))
    dom = None
    S.create_overlay(pool, overlay_name, base, 0)
    try:
        try:
            dom = conn.createXML(X.domain_xml(spec), 0)       # transient
        except libvirt.libvirtError as e:
            return result(TCG, f"KVM guest did not start: {e.get_error_message()}")
        try:
            ip = N.wait_lease(dom, time.monotonic() + timeout_s)[0][0]
        except (Timeout, BackendError) as e:    # hung or died: KVM unusable
            return result(TCG, f"KVM guest reached no DHCP lease in {timeout_s:g} s ({e})")
        return result(KVM, f"KVM guest took lease {ip}")
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        S.delete_volume(pool, overlay_name)
