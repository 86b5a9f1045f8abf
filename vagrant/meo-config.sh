#!/usr/bin/env bash
# Writes the workstation MEO's config for the Vagrant lab's edge hosts that
# are up, and prints its path: one `meo.mepms` entry per host listed by
# `vagrant ssh-config`, at its address on the private network (from the
# Vagrantfile's layout), with its token and the lab's CA. Each MEPM must
# answer on that address with that token and certificate, or it fails.
#
#   cfg=$(bash vagrant/meo-config.sh [LISTEN])      # default 127.0.0.1:8780
#   mecorch --config "$cfg" serve --role meo
#
# Environment: MECORCH_VLAB_DIR (as in the Vagrantfile).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${MECORCH_VLAB_DIR:-$HERE/.vagrant/mecorch-lab}
LISTEN=${1:-127.0.0.1:8780}
die() { printf '[meo-config] ERROR: %s\n' "$*" >&2; exit 1; }
[[ $LISTEN =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]] ||
  die "LISTEN must be a loopback address:port, not '$LISTEN'"

mapfile -t up < <(cd "$HERE" && vagrant ssh-config 2>/dev/null | awk '$1 == "Host" {print $2}')
[ ${#up[@]} -gt 0 ] || die "no edge host is up (cd vagrant && vagrant up)"
for f in edges.tsv ca.pem meo.token; do
  [ -s "$LAB/$f" ] || die "no $LAB/$f (the Vagrantfile makes the lab's files at vagrant up)"
done

out="$LAB/meo.yaml"
{
  echo "# Written by vagrant/meo-config.sh: the MEO over the Vagrant lab's edge hosts."
  echo "role: meo"
  echo "state_dir: $LAB/meo-state"
  echo "run_dir: $LAB/meo-run"
  echo "api:"
  echo "  listen: $LISTEN"
  echo "  token_file: $LAB/meo.token"
  echo "hosts: []"
  echo "meo:"
  echo "  # TCG guests answer slowly: a heartbeat every 5 s, away after 3 missed,"
  echo "  # and time for a package upload to be taken in"
  echo "  heartbeat_s: 5"
  echo "  unreachable_after: 3"
  echo "  request_timeout_s: 120"
  echo "  mepms:"
} > "$out.new"
n=0
for name in "${up[@]}"; do
  line=$(awk -v n="$name" -F'\t' '$1 == n' "$LAB/edges.tsv")
  [ -n "$line" ] || die "$name is up but not in this layout ($LAB/edges.tsv): check MECORCH_EDGES"
  IFS=$'\t' read -r _ host_id ip port <<< "$line"
  url="https://$ip:$port"
  token=$(head -n1 "$LAB/$name/mepm.tokens")
  curl -fsS -o /dev/null --max-time 10 --cacert "$LAB/ca.pem" \
    -H "Authorization: Bearer $token" "$url/mecorch/v1/hosts" ||
    die "$name: its MEPM does not answer on $url (vagrant provision $name)"
  {
    echo "    - id: $host_id"
    echo "      url: $url"
    echo "      token_file: $LAB/$name/mepm.tokens"
    echo "      ca_file: $LAB/ca.pem"
  } >> "$out.new"
  n=$((n + 1))
done
mv "$out.new" "$out"
echo "[meo-config] $n edge host(s) in $out" >&2
echo "$out"
