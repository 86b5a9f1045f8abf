#!/usr/bin/env bash
# Inside a Vagrant edge host, after vagrant/provision.sh: runs mecorch as
# this host's MEPM on the lab's private network, idempotently, as root.
#   1. addresses eth1 (the private network; systemd-networkd keeps it),
#   2. installs the token, TLS certificate and key the Vagrantfile uploaded
#      to /tmp/mecorch-lab (made on the workstation by lab-secrets.sh),
#   3. makes this host's libvirtd take live migrations from the other edge
#      hosts: TCP on the private address only, QEMU's migration ports there,
#   4. writes /etc/mecorch/mepm.yaml and the unit mecorch-mepm.service,
#      (re)starts it when either changed, and waits until the API answers
#      on https://IP:PORT with the token.
#
# usage: edge-up.sh NAME HOST_ID IP PORT
set -euo pipefail

[ $# = 4 ] || { echo "usage: $0 NAME HOST_ID IP PORT" >&2; exit 2; }
NAME=$1 HOST_ID=$2 IP=$3 PORT=$4
ETC=/etc/mecorch
UPLOAD=/tmp/mecorch-lab
say() { printf '[edge-up %s] %s\n' "$NAME" "$*"; }
die() { printf '[edge-up %s] ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

# ---------------------------------------------------------------- eth1
cat > /etc/systemd/network/20-mecorch-vlab.network.new <<EOF
[Match]
Name=eth1
[Network]
Address=$IP/24
EOF
mv /etc/systemd/network/20-mecorch-vlab.network.new /etc/systemd/network/20-mecorch-vlab.network
ip link set eth1 up
ip -4 addr show dev eth1 | grep -q "inet $IP/24" || ip addr add "$IP/24" dev eth1
say "eth1 $IP/24"

# ---------------------------------------------------------------- secrets
mkdir -p "$ETC"
if [ -d "$UPLOAD" ]; then
  install -m 600 -o root -g root "$UPLOAD/mepm.tokens" "$ETC/mepm.tokens"
  install -m 600 -o root -g root "$UPLOAD/mepm.key" "$ETC/mepm.key"
  install -m 644 -o root -g root "$UPLOAD/mepm.pem" "$ETC/mepm.pem"
  install -m 644 -o root -g root "$UPLOAD/ca.pem" "$ETC/lab-ca.pem"
  rm -rf "$UPLOAD"
fi
for f in mepm.tokens mepm.key mepm.pem lab-ca.pem; do
  [ -s "$ETC/$f" ] || die "$ETC/$f missing (the Vagrantfile uploads it)"
done

changed=0
# ---------------------------------------------------------------- live migration
# Another edge host's libvirtd sends a running VM here peer to peer
# (qemu+tcp://IP/system), its QEMU the memory and disks. libvirtd listens
# on TCP on the private address ONLY, with auth_tcp "none": the lab's
# private network (10.77.0.0/24, an isolated libvirt network of the
# workstation) is its only access control. Production edge hosts use
# qemu+tls:// instead (libvirtd-tls.socket, client certificates of a CA).
# Debian 12's libvirt 9.0 is socket-activated: listen_tcp/listen_addr of
# libvirtd.conf are ignored, the address is libvirtd-tcp.socket's
# (FreeBind: at boot the socket is bound before networkd addresses eth1).
# The incoming QEMU and the NBD server of a disk copy listen on this
# address too (migration_address), in ports 49152-49215, and this host
# names itself by it (migration_host) when a migration gives no URI.
libvirt_changed=0
conf_set() {   # conf_set FILE KEY VALUE: one uncommented "KEY = VALUE" line
  local line="$2 = $3"
  grep -qxF "$line" "$1" && return 0
  sed -i "/^#*[[:space:]]*$2[[:space:]]*=/d" "$1"
  printf '%s\n' "$line" >> "$1"
  libvirt_changed=1
}
conf_set /etc/libvirt/libvirtd.conf auth_tcp '"none"'
conf_set /etc/libvirt/qemu.conf migration_address "\"$IP\""
conf_set /etc/libvirt/qemu.conf migration_host "\"$IP\""
conf_set /etc/libvirt/qemu.conf migration_port_min 49152
conf_set /etc/libvirt/qemu.conf migration_port_max 49215
dropin=/etc/systemd/system/libvirtd-tcp.socket.d/mecorch-lab.conf
mkdir -p "${dropin%/*}"
want_dropin=$(printf '[Socket]\nListenStream=\nListenStream=%s:16509\nFreeBind=yes\n' "$IP")
if [ "$(cat "$dropin" 2>/dev/null)" != "$want_dropin" ]; then
  printf '%s\n' "$want_dropin" > "$dropin"
  libvirt_changed=1
fi
if [ "$libvirt_changed" = 1 ] || ! systemctl is-active --quiet libvirtd-tcp.socket; then
  say "libvirtd: TCP on $IP:16509 (auth none), migrations on $IP:49152-49215"
  systemctl daemon-reload
  # libvirtd takes its sockets from systemd when it starts: stopped first
  # (running domains stay), started again once the TCP socket listens.
  systemctl stop libvirtd.service
  systemctl enable --quiet libvirtd-tcp.socket
  systemctl restart libvirtd-tcp.socket
  systemctl start libvirtd.service
  changed=1                      # a running MEPM's libvirt connection is gone
fi
# The box has no firewall (INPUT policy ACCEPT); should one be there, the
# private network is let in to libvirtd and the migration ports.
if ! iptables -S INPUT | grep -qx -- '-P INPUT ACCEPT'; then
  for ports in 16509 49152:49215; do
    rule=(INPUT -i eth1 -s 10.77.0.0/24 -d "$IP" -p tcp --dport "$ports" -j ACCEPT)
    iptables -C "${rule[@]}" 2>/dev/null || iptables -I "${rule[@]}"
  done
fi
for ((i = 0; i < 30; i++)); do
  virsh -c "qemu+tcp://$IP/system" version >/dev/null 2>&1 && break
  sleep 1
done
virsh -c "qemu+tcp://$IP/system" version >/dev/null 2>&1 ||
  die "libvirtd does not answer on qemu+tcp://$IP/system"
ss -Hltn "( sport = :16509 )" | awk '{print $4}' | grep -qvx "$IP:16509" &&
  die "libvirtd listens on TCP beyond $IP: $(ss -Hltn '( sport = :16509 )')"
say "libvirtd takes live migrations on qemu+tcp://$IP/system"

# AppArmor (on in the box's kernel) confines each QEMU to the paths
# virt-aa-helper lists for its domain; the VIM's volumes under the state
# dir are not among them (virt-aa-helper's own profile does not let it read
# there), and QEMU was refused its guest's disks and their base image. The
# lab lets QEMU use the VIM's pool and read the guests' environment files
# (fw_cfg), of every host's state dir, nothing else of it.
aa=/etc/apparmor.d/local/abstractions/libvirt-qemu
aa_rules="  # mecorch (vagrant/edge-up.sh): the libvirt VIM's volumes, guests' env
  /var/lib/mecorch/hosts/*/pool/* rwk,
  /var/lib/mecorch/hosts/*/vm-env/* r,"
if [ -d "${aa%/*}" ] && [[ $(cat "$aa" 2>/dev/null) != *"$aa_rules"* ]]; then
  [ -f "$aa" ] && sed -i '/# mecorch (vagrant\/edge-up.sh)/,+2d' "$aa"
  printf '%s\n' "$aa_rules" >> "$aa"
  say "AppArmor: QEMU may use the VIM's volumes and read the guests' env files"
fi

# The driver's live keys, when the synced tree's VIM has them (a tree from
# before them would refuse the config).
live_vim=""
if /opt/mecorch/venv/bin/python -c 'import sys
from drivers.libvirt_vim.settings import SCHEMA
sys.exit(0 if {"live_uri", "live_address"} <= {k.path for k in SCHEMA} else 1)'; then
  live_vim="      live_uri: qemu+tcp://$IP/system   # the other hosts' libvirtd migrates to
      live_address: $IP             # the migration stream's address"
else
  say "note: this tree's libvirt VIM has no live_uri: the MEPM gets none"
fi

# ---------------------------------------------------------------- config
write_if_changed() {   # write_if_changed PATH: stdin -> PATH when different
  local new
  new=$(cat)
  if [ "$(cat "$1" 2>/dev/null)" != "$new" ]; then
    printf '%s\n' "$new" > "$1.new" && mv "$1.new" "$1"
    changed=1
  fi
}
write_if_changed "$ETC/mepm.yaml" <<EOF
# Written by vagrant/edge-up.sh: this Vagrant edge host's MEPM.
role: mepm
api:
  listen: $IP:$PORT                  # off loopback: token and TLS
  token_file: $ETC/mepm.tokens
  tls_cert: $ETC/mepm.pem
  tls_key: $ETC/mepm.key
hosts:
  - id: $HOST_ID
    cim: {}
    vim:
      boot_timeout_s: 900            # a VM under TCG inside a TCG guest
      # network_cidr: the default on every edge host: a VM moved live keeps
      # its address
$live_vim
    mep:
      data_plane_address: $IP        # UEs and the workstation ask DNS here
EOF
write_if_changed /etc/systemd/system/mecorch-mepm.service <<EOF
[Unit]
Description=mecorch MEPM of $HOST_ID
After=docker.service libvirtd.service network.target
Wants=docker.service libvirtd.service

[Service]
ExecStart=/opt/mecorch/venv/bin/mecorch --config $ETC/mepm.yaml serve --role mepm
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable --quiet mecorch-mepm.service
if [ "$changed" = 1 ] || ! systemctl is-active --quiet mecorch-mepm.service; then
  say "starting mecorch-mepm ($HOST_ID on https://$IP:$PORT)"
  systemctl restart mecorch-mepm.service
fi

# ---------------------------------------------------------------- ready
token=$(head -n1 "$ETC/mepm.tokens")
started=$SECONDS
until curl -fs -o /dev/null --cacert "$ETC/lab-ca.pem" \
        -H "Authorization: Bearer $token" "https://$IP:$PORT/mecorch/v1/hosts"; do
  if ! systemctl is-active --quiet mecorch-mepm.service && [ $((SECONDS - started)) -gt 20 ]; then
    journalctl -u mecorch-mepm.service --no-pager -n 40 >&2 || true
    die "mecorch-mepm is not running"
  fi
  [ $((SECONDS - started)) -lt 300 ] || {
    journalctl -u mecorch-mepm.service --no-pager -n 40 >&2 || true
    die "the MEPM did not answer on https://$IP:$PORT within 300 s"
  }
  sleep 1
done
say "MEPM ready in $((SECONDS - started)) s: $HOST_ID at https://$IP:$PORT"
