#!/usr/bin/env bash
# Inside a Vagrant edge host, after vagrant/provision.sh: runs mecorch as
# this host's MEPM on the lab's private network, idempotently, as root.
#   1. addresses eth1 (the private network; systemd-networkd keeps it),
#   2. installs the token, TLS certificate and key the Vagrantfile uploaded
#      to /tmp/mecorch-lab (made on the workstation by lab-secrets.sh),
#   3. writes /etc/mecorch/mepm.yaml and the unit mecorch-mepm.service,
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

# ---------------------------------------------------------------- config
changed=0
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
