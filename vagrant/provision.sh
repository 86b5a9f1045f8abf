#!/usr/bin/env bash
# Sets up a Debian 12 edge host for mecorch, idempotently, as root.
#
# One script for every place mecorch runs: a user's lab node, the Vagrant
# box (vagrant/Vagrantfile) and CI (.ci/run). It
#   1. installs the backends from Debian's packages (only what is missing),
#   2. installs mecorch into a virtualenv and links the `mecorch` command,
#   3. starts the daemons that are not running (systemd when the host has it,
#      else in the background with pid files under /run/mecorch),
#   4. builds the sample workloads (cached under /var/cache/mecorch/workloads).
#
# Environment knobs (all optional):
#   MECORCH_VENV       virtualenv path           (default /opt/mecorch/venv)
#   MECORCH_SKIP_WORKLOADS=1   do not build the sample workloads
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MECORCH_VENV:-/opt/mecorch/venv}
RUN_DIR=/run/mecorch
LOG_DIR=/var/log/mecorch
STATE_DIR=/var/lib/mecorch
WORKLOADS=/var/cache/mecorch/workloads
REGISTRY_ADDR=127.0.0.1:5000

say() { printf '[provision] %s\n' "$*"; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$STATE_DIR" "$WORKLOADS" /etc/mecorch

# ---------------------------------------------------------------- packages
PACKAGES=(
  # container side: Docker Engine and the container image repository
  docker.io docker-registry
  # VM side: libvirt + QEMU (TCG works everywhere; KVM is used only if it boots)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  # MEP: DNS rules and traffic rules; iproute2 for the test network namespaces
  dnsmasq-base iptables iproute2 dnsutils curl
  # PostgreSQL 15, for an MEO whose replicas share a database (meo.database)
  # and its tests, which run a private cluster of their own
  # (tests/support/pglab.py); the cluster Debian makes is not used
  postgresql
  # building the sample VM image
  busybox-static cpio extlinux syslinux-common fdisk e2fsprogs xz-utils kmod
  # building libvirt-python into the virtualenv
  python3 python3-venv python3-dev gcc pkg-config libvirt-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "Debian packages present"
fi

# ---------------------------------------------------------------- python
# Debian's own python3 (3.11 on bookworm): what a fresh edge host has.
PY=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# Reinstall only when the project metadata changed (editable install: code
# changes need no reinstall).
stamp="$VENV/.mecorch-installed"
want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1):$REPO
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing mecorch into $VENV"
  "$VENV/bin/pip" install -q -e "$REPO[test]"
  echo "$want" > "$stamp"
fi
# Bytecode for mecorch's own modules, as pip writes it for the packages it
# installs (an editable install has none): where PYTHONDONTWRITEBYTECODE is
# set, every `mecorch` start would otherwise compile ~80 modules again
# (0.3-0.4 s of a 1 s start). A source newer than its .pyc is still read.
"$VENV/bin/python" -m compileall -q "$REPO/mecorch" "$REPO/drivers" >/dev/null
ln -sf "$VENV/bin/mecorch" /usr/local/bin/mecorch

# ---------------------------------------------------------------- daemons
have_systemd() { [ -d /run/systemd/system ]; }

# start_bg NAME PIDFILE CMD...: start CMD in the background unless the
# process named in PIDFILE is alive. Only pids we wrote are ever signalled.
start_bg() {
  local name=$1 pidfile=$2; shift 2
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  say "starting $name"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not come up within ${secs}s (logs: $LOG_DIR)"
}

docker_up() { docker -H unix:///var/run/docker.sock info; }
if ! docker_up >/dev/null 2>&1; then
  if have_systemd; then
    systemctl start docker
  else
    start_bg dockerd "$RUN_DIR/dockerd.pid" dockerd --pidfile=/var/run/docker.pid
  fi
  wait_for dockerd 60 docker_up
fi
say "dockerd ready"

registry_up() { curl -fsS "http://$REGISTRY_ADDR/v2/"; }
# Debian's docker-registry unit serves :5000 with htpasswd auth on every
# interface; mecorch's registry is loopback-only without auth, on the same
# port: on a systemd host, the packaged unit gives way to it.
if have_systemd && systemctl is-active --quiet docker-registry 2>/dev/null && ! registry_up >/dev/null 2>&1; then
  say "stopping Debian's docker-registry unit (mecorch runs its own on $REGISTRY_ADDR)"
  systemctl disable --now docker-registry
fi
# The registry's storage is the registry daemon's, not mecorch's state:
# it lives beside the state dir, not in it (mecorch keeps its state dir
# 0700 and its files 0600; the registry writes with its own modes, as its
# own user on a packaged install). An older lab's storage moves there.
REGISTRY_DIR=/var/lib/mecorch-registry
if ! registry_up >/dev/null 2>&1; then
  if [ -d "$STATE_DIR/registry" ] && [ ! -e "$REGISTRY_DIR" ]; then
    mv "$STATE_DIR/registry" "$REGISTRY_DIR"
  fi
  # Our own registry config: loopback only, no auth, deletes enabled (a
  # deleted package removes its image from the repository).
  cat > /etc/mecorch/registry.yml <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REGISTRY_DIR}
  delete: {enabled: true}
http:
  addr: $REGISTRY_ADDR
EOF
  start_bg registry "$RUN_DIR/registry.pid" docker-registry serve /etc/mecorch/registry.yml
  wait_for registry 30 registry_up
fi
say "registry ready at $REGISTRY_ADDR"

# /dev/kvm as udev sets it on a normal Debian (root:kvm 0660). With the
# 0600 some machines boot with, libvirt's permission check and its cached
# QEMU capabilities disagree and it re-probes QEMU on every domain define
# (30-85 s each). Whether KVM really boots guests is probed by mecorch.
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

libvirt_up() { virsh -c qemu:///system version; }
if ! libvirt_up >/dev/null 2>&1; then
  if have_systemd; then
    systemctl start virtlogd libvirtd
  else
    # virtlogd first: without it domain creation hangs ~45 s and fails.
    start_bg virtlogd "$RUN_DIR/virtlogd.pid" virtlogd
    start_bg libvirtd "$RUN_DIR/libvirtd.pid" libvirtd
  fi
  wait_for libvirtd 60 libvirt_up
fi
say "libvirtd ready"

# ---------------------------------------------------------------- workloads
if [ "${MECORCH_SKIP_WORKLOADS:-0}" != 1 ]; then
  bash "$REPO/vagrant/workloads/build-container-image.sh" "$WORKLOADS" "$REGISTRY_ADDR"
  bash "$REPO/vagrant/workloads/build-vm-image.sh" "$WORKLOADS"
fi

say "done: run 'mecorch doctor' to check the edge host"
