"""A VM that does not boot in time (here: a boot timeout too short for the
sample guest under TCG) fails naming the setting and showing the end of the
guest's console, on the real libvirt/QEMU; the rollback leaves nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.crashlab import Lab

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.mep]


def test_boot_timeout_names_its_setting_and_the_console():
    lab = Lab("bt", vim={"boot_timeout_s": 2}, interval_s=30)
    try:
        lab.start()
        lab.onboard(("sample-vm-app",))
        iid = lab.create("sample-vm")
        r = subprocess.run([sys.executable, "-m", "mecorch.cli", "--api", lab.c.base, "app",
                            "instantiate", iid[:8], "--type", "VM", "--host", lab.host_id],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1
        assert "instantiate failed:" in r.stderr
        assert "(waited 2 s: vim.boot_timeout_s)" in r.stderr, r.stderr
        assert "the guest's console ended with: " in r.stderr
        op = lab.c.get(f"/app_lcm/v1/app_lcm_op_occs?filter=(eq,appInstanceId,{iid})")[0]
        assert op["operationState"] == "FAILED" and "vim.boot_timeout_s" in op["error"]["detail"]
        assert lab.problems() == []            # rolled back: no domain, volume or rule left
    finally:
        left = lab.teardown()
    assert left == []
