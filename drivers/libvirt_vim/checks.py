"""`mecorch doctor` checks of the libvirt VIM. Never raises."""

from __future__ import annotations

import grp
import ipaddress
import os
import shutil
import stat
import xml.etree.ElementTree as ET

import libvirt

from mecorch.kernel.errors import MecorchError
from mecorch.driverapi.model import Check

from . import accel as A
from .errors import VIRTLOGD_HINT, libvirt_errors

PROVISION = "run `bash vagrant/provision.sh` (starts virtlogd, then libvirtd)"


def _version(v: int) -> str:
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def run_checks(drv) -> list[Check]:
    try:
        s = drv.settings
    except MecorchError as e:
        return [Check("vim.config", False, e.detail, "fix the vim section of the config")]
    checks: list[Check] = []
    try:
        conn = drv._connect()
        with libvirt_errors("versions"):
            detail = (f"{s.uri}: libvirt {_version(conn.getLibVersion())}, "
                      f"QEMU {_version(conn.getVersion())}")
        checks.append(Check("vim.libvirtd", True, detail))
    except MecorchError as e:
        checks.append(Check("vim.libvirtd", False, e.detail, PROVISION))
        conn = None
    if s.uri.startswith("qemu:///"):
        sock = "/run/libvirt/virtlogd-sock"
        ok = os.path.exists(sock)
        checks.append(Check("vim.virtlogd", ok, f"{sock} {'exists' if ok else 'is missing'}",
                            "" if ok else VIRTLOGD_HINT))
    checks.append(_accel_check(drv, s, conn))
    kvm = _kvm_mode_check()
    if kvm is not None:
        checks.append(kvm)
    checks.append(_pool_dir_check(s))
    if conn is not None:
        checks.append(_pool_check(conn, s))
        checks.append(_network_check(conn, s))
    ok = shutil.which("qemu-img") is not None
    checks.append(Check("vim.qemu-img", ok, "qemu-img found" if ok else "qemu-img not found",
                        "" if ok else "apt-get install qemu-utils"))
    return checks


def _accel_check(drv, s, conn) -> Check:
    if s.accel != "auto":
        return Check("vim.accel", True, f"{s.accel} (set by config, not probed)")
    cached = A.load(str(s.accel_cache))
    # The probe boots a guest in the pool on the network: only where they
    # exist already (the doctor makes neither)
    if not cached and conn is not None and s.probe_image and os.path.isfile(s.probe_image) \
            and _exists(conn.storagePoolLookupByName, s.pool) \
            and _exists(conn.networkLookupByName, s.network):
        try:
            cached = drv.probe_accel(s.probe_image)
        except MecorchError as e:
            return Check("vim.accel", False, f"probe with {s.probe_image} failed: {e.detail}",
                         "check libvirtd and the probe image (vim.probe_image)")
    if cached:
        return Check("vim.accel", True, f"{cached['accel']} (probe: {cached.get('reason')})")
    why_not = None
    if conn is not None:
        try:
            why_not = A.kvm_offered(conn)
        except libvirt.libvirtError as e:
            why_not = e.get_error_message()
    return Check("vim.accel", True,
                 "not probed yet: the first deploy boots its image under KVM and falls back "
                 "to TCG if it does not boot" + (f" (KVM not offered: {why_not})" if why_not else ""))


def _pool_check(conn, s) -> Check:
    try:
        pool = conn.storagePoolLookupByName(s.pool)
        state, cap, _, avail = pool.info()
        path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
        ok = bool(pool.isActive())
        return Check("vim.pool", ok, f"pool {s.pool} at {path}: "
                     f"{'active' if ok else 'inactive'}, {avail / 2**30:.1f} of "
                     f"{cap / 2**30:.1f} GiB free", "" if ok else f"virsh pool-start {s.pool}")
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return Check("vim.pool", True, f"pool {s.pool} not made yet: `mecorch serve` makes "
                         f"it at {s.pool_dir} on first use")
        return Check("vim.pool", False, f"pool {s.pool}: {e.get_error_message()}",
                     "it is created by the driver's open() (first use)")


def _network_check(conn, s) -> Check:
    try:
        net = conn.networkLookupByName(s.network)
        root = ET.fromstring(net.XMLDesc(0))
        ip = root.find("./ip")
        bridge = root.find("./bridge")
        cidr = (str(ipaddress.ip_interface(f"{ip.get('address')}/{ip.get('netmask')}").network)
                if ip is not None and ip.get("netmask") else "?")
        ok = bool(net.isActive())
        return Check("vim.network", ok, f"network {s.network} bridge "
                     f"{bridge.get('name') if bridge is not None else '?'} {cidr}: "
                     f"{'active' if ok else 'inactive'}", "" if ok else f"virsh net-start {s.network}")
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return Check("vim.network", True, f"network {s.network} not made yet: `mecorch "
                         f"serve` makes it (bridge {s.bridge}, {s.network_cidr}) on first use")
        return Check("vim.network", False, f"network {s.network}: {e.get_error_message()}",
                     "it is created by the driver's open() (first use)")


def _exists(lookup, name: str) -> bool:
    try:
        lookup(name)
        return True
    except libvirt.libvirtError:
        return False


def _kvm_mode_check() -> Check | None:
    """/dev/kvm must be root:kvm 0660 (what udev does): when QEMU can use it
    but libvirt's access test says it cannot, libvirt re-probes QEMU's
    capabilities on every domain definition (30-80 s each, measured here)."""
    try:
        st = os.stat("/dev/kvm")
    except FileNotFoundError:
        return None
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        kvm_gid = None
    ok = st.st_gid == kvm_gid and (st.st_mode & 0o060) == 0o060
    return Check("vim.dev-kvm", ok, f"/dev/kvm mode {stat.S_IMODE(st.st_mode):04o} gid {st.st_gid}",
                 "" if ok else "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm "
                 "(else libvirt re-probes QEMU on every define: 30-80 s each)")


def _pool_dir_check(s) -> Check:
    """QEMU runs as another user: every parent of the pool must be searchable."""
    closed = [str(p) for p in s.pool_dir.parents
              if p.exists() and not os.stat(p).st_mode & stat.S_IXOTH]
    if closed:
        return Check("vim.pool-dir", False, f"QEMU cannot reach {s.pool_dir}: "
                     f"{', '.join(closed)} not searchable by others",
                     f"chmod o+x {' '.join(closed)} or use another state_dir")
    return Check("vim.pool-dir", True, f"{s.pool_dir} is reachable by QEMU")
