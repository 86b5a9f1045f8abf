#!/usr/bin/env bash
# The Vagrant lab's secrets, made on the workstation (called by the
# Vagrantfile for each edge host it defines; idempotent):
#   DIR/ca.pem, DIR/ca.key         the lab's CA (the MEO's ca_file)
#   DIR/meo.token                  the MEO's own API token
#   DIR/NAME/mepm.pem, mepm.key    the MEPM's TLS certificate for its IP
#   DIR/NAME/mepm.tokens           the MEPM's API token (the MEO's token_file)
#   DIR/NAME/ca.pem                a copy of the CA
# Only DIR/NAME/ goes into that guest.
#
# usage: lab-secrets.sh DIR NAME IP
set -euo pipefail

[ $# = 3 ] || { echo "usage: $0 DIR NAME IP" >&2; exit 2; }
DIR=$1 NAME=$2 IP=$3
[[ $NAME =~ ^[a-z][a-z0-9-]*$ ]] || { echo "lab-secrets: bad host name '$NAME'" >&2; exit 2; }
[[ $IP =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "lab-secrets: bad IPv4 address '$IP'" >&2; exit 2; }

umask 077
mkdir -p "$DIR/$NAME"
exec 9>"$DIR/.lock"
flock 9

token() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; echo; }

if [ ! -s "$DIR/ca.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mecorch vagrant lab CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
fi
[ -s "$DIR/meo.token" ] || token > "$DIR/meo.token"

H="$DIR/$NAME"
if [ ! -s "$H/mepm.pem" ]; then
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$NAME" \
    -keyout "$H/mepm.key" -out "$H/mepm.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$IP" \
    > "$H/ext.cnf"
  openssl x509 -req -in "$H/mepm.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 3650 -extfile "$H/ext.cnf" -out "$H/mepm.pem.part" 2>/dev/null
  rm -f "$H/mepm.csr" "$H/ext.cnf"
  mv "$H/mepm.pem.part" "$H/mepm.pem"
fi
[ -s "$H/mepm.tokens" ] || token > "$H/mepm.tokens"
cp "$DIR/ca.pem" "$H/ca.pem"
