#!/usr/bin/env bash
# The Vagrant lab end to end, from a clean state, as root on the workstation:
#   box      vagrant/box/build.sh (cached when its inputs did not change)
#   clean    vagrant destroy -f of this layout, the MEO's old state removed
#   up       vagrant up of MECORCH_EDGES hosts (default 2) to ready MEPMs
#   meo      vagrant/meo-config.sh + `mecorch serve --role meo` on loopback,
#            every host REACHABLE
#   deploy   the sample container app onto each edge host through the MEO,
#            plus a client app (the same image, no rules) beside it
#   reach    on each host: its DNS name answered by the host's MEP on the
#            private network; the app reached by that name and through its
#            traffic rule from the workstation (a network namespace of this
#            script on the lab's bridge, routed via that host); and from the
#            client app inside the host
#   terminate  every instance terminated and deleted through the MEO,
#            nothing of them left on the hosts
#   destroy  vagrant destroy -f
# and prints the time of each phase. It talks only to loopback and the
# lab's private network (10.77.0.0/24).
#
# Environment: MECORCH_EDGES (default 2), KEEP=1 (leave the lab up),
#   MECORCH_VLAB_MEO_PORT (default 8780).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export MECORCH_EDGES=${MECORCH_EDGES:-2}
LAB=${MECORCH_VLAB_DIR:-$HERE/.vagrant/mecorch-lab}
MEO_PORT=${MECORCH_VLAB_MEO_PORT:-8780}
MEO_URL=http://127.0.0.1:$MEO_PORT
MECORCH=${MECORCH_BIN:-/opt/mecorch/venv/bin/mecorch}
VIP=10.90.0.10                       # the sample app's traffic rule (its AppD)
NAME=sample-http.mec.local           # and its DNS rule
TAG=vl$$                             # this run's netns / veth names
say() { printf '[smoke] %s\n' "$*"; }
die() { printf '[smoke] FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

declare -a TIMES=()
phase_start=0
phase() { phase_start=$SECONDS; say "== $1"; CUR=$1; }
phase_end() { TIMES+=("$(printf '%-10s %5d s' "$CUR" $((SECONDS - phase_start)))"); }
report() {
  say "phase times (MECORCH_EDGES=$MECORCH_EDGES):"
  local t
  for t in "${TIMES[@]}"; do say "  $t"; done
  say "  total      $((SECONDS - smoke_start)) s"
}

vg() { (cd "$HERE" && vagrant "$@"); }
meo_pid=""
work=$(mktemp -d /var/tmp/mecorch-smoke.XXXXXX)
netns_made=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [ -n "$meo_pid" ] && kill -0 "$meo_pid" 2>/dev/null; then
    kill "$meo_pid"; wait "$meo_pid" 2>/dev/null
  fi
  for ns in "${netns_made[@]}"; do
    ip netns del "$ns" 2>/dev/null
    ip link del "${ns}h" 2>/dev/null
    rm -rf "/etc/netns/$ns"
  done
  if [ "$rc" != 0 ]; then
    say "MEO log (last lines):"; tail -n 30 "$work/meo.log" 2>/dev/null
  fi
  if [ "${KEEP:-0}" != 1 ] && [ "$rc" != 0 ]; then
    say "destroying the lab after the failure (KEEP=1 keeps it)"
    vg destroy -f >/dev/null 2>&1
  fi
  rm -rf "$work"
  [ ${#TIMES[@]} -gt 0 ] && report
  exit "$rc"
}
trap cleanup EXIT
smoke_start=$SECONDS

# ------------------------------------------------------------------ box
phase box
bash "$HERE/box/build.sh"
phase_end

# ------------------------------------------------------------------ clean
phase clean
vg destroy -f >/dev/null
rm -rf "$LAB/meo-state" "$LAB/meo-run"
phase_end

# ------------------------------------------------------------------ up
phase up
# (without the upload's progress meter: thousands of "Progress: N%" lines)
vg up 2>&1 | sed -u 's/\x1b\[K/\n/g' | grep --line-buffered -v '^Progress: '
phase_end

# ------------------------------------------------------------------ meo
phase meo
cfg=$(bash "$HERE/meo-config.sh" "127.0.0.1:$MEO_PORT")
MECORCH_TOKEN=$(head -n1 "$LAB/meo.token")
export MECORCH_TOKEN
"$MECORCH" --config "$cfg" serve --role meo > "$work/meo.log" 2>&1 &
meo_pid=$!
m() { "$MECORCH" --api "$MEO_URL" -o json "$@" </dev/null; }
reachable() {
  m host list 2>/dev/null | python3 -c '
import json, sys
hosts = json.load(sys.stdin)
sys.exit(0 if len(hosts) == int(sys.argv[1]) and all(h["state"] == "REACHABLE" for h in hosts) else 1)
' "$MECORCH_EDGES" 2>/dev/null
}
for ((i = 0; i < 120; i++)); do
  reachable && break
  kill -0 "$meo_pid" 2>/dev/null || die "the MEO exited (log: $(tail -n 5 "$work/meo.log"))"
  sleep 1
done
reachable || die "the MEO does not see $MECORCH_EDGES REACHABLE hosts: $(m host list)"
say "MEO on $MEO_URL with $MECORCH_EDGES REACHABLE edge hosts"
phase_end

# ------------------------------------------------------------------ deploy
phase deploy
jget() { python3 -c 'import json, sys; d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d; print(d[sys.argv[1]])' "$1"; }
bash "$REPO/vagrant/workloads/build-container-image.sh" >/dev/null   # the image the packages carry
cp -r "$REPO/examples/sample-container-app" "$work/app"
"$MECORCH" package build "$work/app" --zip "$work/sample-http.zip" >/dev/null
# the client app: the same image, another appDId, no rules of its own
cp -r "$REPO/examples/sample-container-app" "$work/client"
python3 - "$work/client/Definitions/appd.yaml" <<'EOF'
import sys, yaml
path = sys.argv[1]
appd = yaml.safe_load(open(path))
appd["appDId"] = appd["appName"] = "vlab-client"
appd.pop("appDNSRule", None)
appd.pop("appTrafficRule", None)
open(path, "w").write(yaml.safe_dump(appd))
EOF
"$MECORCH" package build "$work/client" --zip "$work/vlab-client.zip" >/dev/null
m package onboard "$work/sample-http.zip" >/dev/null
m package onboard "$work/vlab-client.zip" >/dev/null
declare -A APP=() CLIENT=()
while IFS=$'\t' read -r name host_id _ _; do
  for app in sample-http vlab-client; do
    id=$(m app create "$app" --name "$app-$name" | jget id) || die "$app on $name: create failed"
    m app instantiate "$id" --type CONTAINER --host "$host_id" >/dev/null || die "$app on $name: instantiate failed"
    state=$(m app show "$id" | jget instantiationState) || die "$app on $name: show failed"
    on=$(m app show "$id" | jget hostId) || die "$app on $name: show failed"
    if [ "$state" != INSTANTIATED ] || [ "$on" != "$host_id" ]; then
      die "$app on $name: $state on $on"
    fi
    if [ "$app" = sample-http ]; then APP[$name]=$id; else CLIENT[$name]=$id; fi
    say "$app instantiated on $host_id ($id)"
  done
done < "$LAB/edges.tsv"
phase_end

# ------------------------------------------------------------------ reach
phase reach
client_fetch() {   # the busybox script the client app runs
  cat <<EOF
a=\$(nslookup $NAME | sed -n 's/^Address[^:]*:[[:space:]]*\([0-9.]*\)\$/\1/p' | tail -n1)
echo "resolved \$a"
printf 'GET / HTTP/1.0\r\nHost: $NAME\r\n\r\n' | nc -w 5 "\$a" 80
EOF
}
bridge=$(virsh -q -c qemu:///system net-info mecorch-vlab | awk '/^Bridge:/ {print $2}')
[ -n "$bridge" ] || die "no bridge for the libvirt network mecorch-vlab"
k=0
while IFS=$'\t' read -r name _ ip port; do
  k=$((k + 1))
  # DNS: the host's MEP answers the app's name on the private network
  got=$(dig +short +time=3 +tries=2 "@$ip" "$NAME") || die "$name: dig @$ip $NAME failed: $got"
  [ "$got" = "$VIP" ] || die "$name: dig @$ip $NAME gave '$got', not $VIP"
  say "$name: $NAME -> $got (dig @$ip)"
  # A client of the workstation on the lab's bridge, resolving through and
  # routed via this host: the name, then the traffic rule's address.
  ns="$TAG$k"
  ip netns add "$ns"
  netns_made+=("$ns")
  ip link add "${ns}h" type veth peer name "${ns}c" netns "$ns"
  ip link set "${ns}h" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$((200 + k))/24" dev "${ns}c"
  ip -n "$ns" link set "${ns}c" up
  ip -n "$ns" route add "$VIP/32" via "$ip"
  mkdir -p "/etc/netns/$ns"
  echo "nameserver $ip" > "/etc/netns/$ns/resolv.conf"
  body=""
  for ((i = 0; i < 10; i++)); do
    body=$(ip netns exec "$ns" curl -fsS -m 5 "http://$NAME/" 2>/dev/null) && break
    sleep 1
  done
  [[ $body == *"mecorch sample container"* ]] ||
    die "$name: http://$NAME/ from the workstation gave '$body'"
  say "$name: http://$NAME/ from the workstation: $body"
  # From the client app beside it: its resolver is the MEP on its gateway.
  # The host's own instance of the client app (its MEPM, asked directly on
  # the private network with its token): its container carries that id.
  listed=$(curl -sS --cacert "$LAB/ca.pem" -H "Authorization: Bearer $(head -n1 "$LAB/$name/mepm.tokens")" \
      "https://$ip:$port/app_lcm/v1/app_instances" 2>&1) ||
    die "$name: its MEPM's instance list: $listed"
  host_inst=$(python3 -c '
import json, sys
ids = [i["id"] for i in json.loads(sys.argv[1])
       if i.get("appDId") == "vlab-client" and i.get("instantiationState") == "INSTANTIATED"]
print(ids[0] if len(ids) == 1 else "")' "$listed" 2>&1) || die "$name: its MEPM's instance list: $host_inst: $listed"
  [ -n "$host_inst" ] || die "$name: its MEPM has no single instance of vlab-client: $listed"
  # (each $(...) below ends in `|| die`: under set -e a failed substitution
  # would otherwise end the script without a word)
  cid=$(vg ssh "$name" -c "sudo docker ps -q --filter label=mecorch.instance=$host_inst --filter label=mecorch.role=app" </dev/null 2>"$work/ssh.err" | tr -d '\r') ||
    die "$name: docker ps in the host: $(cat "$work/ssh.err")"
  [ -n "$cid" ] || die "$name: no container of the client app (host instance $host_inst)"
  # The app's own resolver answers the name, and HTTP reaches the address it
  # gave. busybox nslookup + nc, not wget: busybox-static's wget crashes in
  # glibc's NSS without its modules. The script goes in on stdin (no quoting
  # through ssh, sudo and docker exec).
  body=""
  for ((i = 0; i < 10; i++)); do
    body=$(client_fetch | vg ssh "$name" -c "sudo docker exec -i $cid /bin/busybox sh" \
           2>"$work/ssh.err" | tr -d '\r') && [[ $body == *"mecorch sample container"* ]] && break
    sleep 1
  done
  [[ $body == *"resolved $VIP"* && $body == *"mecorch sample container"* ]] ||
    die "$name: http://$NAME/ from the client app gave '$body' ($(cat "$work/ssh.err"))"
  say "$name: http://$NAME/ from the client app: $(grep -m1 resolved <<<"$body"), $(tail -n1 <<<"$body")"
done < "$LAB/edges.tsv"
phase_end

# ------------------------------------------------------------------ terminate
phase terminate
while IFS=$'\t' read -r name host_id ip _; do
  for id in "${APP[$name]}" "${CLIENT[$name]}"; do
    m app terminate "$id" >/dev/null
    m app delete "$id" >/dev/null
  done
  left=$(vg ssh "$name" -c "sudo docker ps -aq --filter label=mecorch.host=$host_id" </dev/null 2>"$work/ssh.err" | tr -d '\r') ||
    die "$name: docker ps in the host: $(cat "$work/ssh.err")"
  [ -z "$left" ] || die "$name: containers of $host_id left after terminate: $left"
  got=$(dig +short +time=3 +tries=1 "@$ip" "$NAME" || true)
  [ "$got" != "$VIP" ] || die "$name: $NAME still answered after terminate"
  say "$name: terminated and deleted, no container and no DNS rule left"
done < "$LAB/edges.tsv"
[ "$(m app list | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')" = 0 ] ||
  die "instances left in the MEO: $(m app list)"
kill "$meo_pid"; wait "$meo_pid" 2>/dev/null || true
meo_pid=""
phase_end

# ------------------------------------------------------------------ destroy
if [ "${KEEP:-0}" = 1 ]; then
  say "KEEP=1: the lab stays up (cd vagrant && vagrant destroy -f)"
else
  phase destroy
  vg destroy -f >/dev/null
  phase_end
fi
say "PASSED"
