#!/usr/bin/env bash
# Prints "kvm" if a real guest boots under KVM on this workstation, else
# "tcg" (the reason goes to stderr). The same idea as the VIM's probe
# (drivers/libvirt_vim/accel.py): /dev/kvm being there proves nothing here
# (it opens, but a KVM guest hangs in its kernel's setup), so the sample VM
# image is booted with -accel kvm on a throw-away snapshot and must print
# its init's banner on the serial console within the timeout.
#
# usage: accel-probe.sh [IMAGE] [TIMEOUT_S]
set -euo pipefail

IMAGE=${1:-/var/cache/mecorch/workloads/sample-vm.qcow2}
TIMEOUT=${2:-20}
tcg() { echo "accel-probe: tcg: $*" >&2; echo tcg; exit 0; }

[ -e /dev/kvm ] || tcg "/dev/kvm does not exist"
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then tcg "/dev/kvm is not usable by $(id -un)"; fi
[ -s "$IMAGE" ] || tcg "no probe image $IMAGE (vagrant/workloads/build-vm-image.sh makes it)"
command -v qemu-system-x86_64 >/dev/null || tcg "qemu-system-x86_64 is not installed"

log=$(mktemp)
qemu_pid=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT

# -snapshot: nothing is written to the image; -nic none: no network touched.
qemu-system-x86_64 -accel kvm -m 256 -smp 1 -snapshot -nic none -display none \
  -no-reboot -drive "file=$IMAGE,if=virtio,format=qcow2" -serial "file:$log" \
  -monitor none >/dev/null 2>&1 &
qemu_pid=$!
for ((i = 0; i < TIMEOUT * 5; i++)); do
  if grep -q "MECORCH-SAMPLE-VM" "$log" 2>/dev/null; then
    echo "accel-probe: kvm: the guest reached its init in $((i / 5)) s" >&2
    echo kvm
    exit 0
  fi
  kill -0 "$qemu_pid" 2>/dev/null || tcg "qemu -accel kvm exited before the guest booted"
  sleep 0.2
done
tcg "a KVM guest did not reach its init in ${TIMEOUT} s"
