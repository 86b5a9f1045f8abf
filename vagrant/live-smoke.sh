#!/usr/bin/env bash
# Live relocation of a VM in the Vagrant lab, end to end, as root on the
# workstation:
#   box       vagrant/box/build.sh (cached when its inputs did not change)
#   up        vagrant destroy -f + vagrant up of 2 edge hosts (KEEP=1 and
#             both running: the tree synced in and provisioned again instead)
#   meo       vagrant/meo-config.sh + `mecorch serve --role meo` on loopback,
#             both hosts REACHABLE, each offering live moves (HostInfo.live)
#   deploy    the sample VM app (examples/sample-vm-app) onto edge1 through
#             the MEO; it answers its DNS name through edge1; a marker is
#             written into the guest's RAM (its /cgi-bin/notify store, in its
#             initramfs: a reboot loses it)
#   relocate  `mecorch app relocate ID --live --host vlab-edge2` while a
#             client in a network namespace per host (on the lab's bridge,
#             resolving through and routed via that host) asks the app
#             every 100 ms
#   check     the app answers through edge2, the relocation was LIVE, the
#             marker is still in the guest's RAM (no reboot), edge1 holds
#             nothing (no domain, no instance chain in iptables), the
#             downtime as the clients saw it (edge1's last answer to
#             edge2's first)
#   terminate the instance terminated and deleted through the MEO
#   destroy   vagrant destroy -f (KEEP=1 leaves the lab up)
# and prints the time of each phase. It talks only to loopback and the
# lab's private network (10.77.0.0/24).
#
# Environment: KEEP=1 (reuse a running lab, leave it up),
#   MECORCH_VLAB_MEO_PORT (default 8781).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export MECORCH_EDGES=2
LAB=${MECORCH_VLAB_DIR:-$HERE/.vagrant/mecorch-lab}
MEO_PORT=${MECORCH_VLAB_MEO_PORT:-8781}
MEO_URL=http://127.0.0.1:$MEO_PORT
MECORCH=${MECORCH_BIN:-/opt/mecorch/venv/bin/mecorch}
NAME=sample-vm.mec.local             # the sample VM app's DNS rule
SERVICE_CIDR=10.90.0.0/24            # the hosts' service range (mep default)
SRC=edge1 SRC_ID=vlab-edge1 SRC_IP=10.77.0.11
DST=edge2 DST_ID=vlab-edge2 DST_IP=10.77.0.12
TAG=lv$$                             # this run's netns / veth names
MARK="live-smoke-$$-$RANDOM"         # the marker kept in the guest's RAM
say() { printf '[live-smoke] %s\n' "$*"; }
die() { printf '[live-smoke] FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

declare -a TIMES=()
phase_start=0
phase() { phase_start=$SECONDS; say "== $1"; CUR=$1; }
phase_end() { TIMES+=("$(printf '%-10s %5d s' "$CUR" $((SECONDS - phase_start)))"); }
report() {
  say "phase times:"
  local t
  for t in "${TIMES[@]}"; do say "  $t"; done
  say "  total      $((SECONDS - smoke_start)) s"
}

vg() { (cd "$HERE" && vagrant "$@"); }
# in_host NAME CMD: a root shell command inside an edge host (stdin closed)
in_host() { vg ssh "$1" -c "sudo $2" </dev/null 2>"$work/ssh.err" | tr -d '\r'; }
meo_pid=""
client_pids=()
work=$(mktemp -d /var/tmp/mecorch-live-smoke.XXXXXX)
netns_made=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  for p in "${client_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
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

# ------------------------------------------------------------------ up
phase up
running=$(vg status --machine-readable 2>/dev/null | awk -F, '$3 == "state" && $4 == "running"' | wc -l)
if [ "${KEEP:-0}" = 1 ] && [ "$running" = 2 ]; then
  say "KEEP=1: reusing the running lab (tree synced in, provisioned again)"
  vg rsync >/dev/null
  vg provision 2>&1 | grep --line-buffered -E '\[(edge-up|provision)' || true
else
  vg destroy -f >/dev/null
  # (without the upload's progress meter: thousands of "Progress: N%" lines)
  vg up 2>&1 | sed -u 's/\x1b\[K/\n/g' | grep --line-buffered -v '^Progress: '
fi
rm -rf "$LAB/meo-state" "$LAB/meo-run"
for h in "$SRC:$SRC_IP" "$DST:$DST_IP"; do
  in_host "${h%%:*}" "virsh -c qemu+tcp://${h#*:}/system version --daemon" >/dev/null ||
    die "${h%%:*}: its libvirtd does not answer on qemu+tcp://${h#*:}/system: $(cat "$work/ssh.err")"
done
# each host reaches the other's libvirtd (the source connects peer to peer)
in_host "$SRC" "virsh -c qemu+tcp://$DST_IP/system uri" >/dev/null ||
  die "$SRC does not reach qemu+tcp://$DST_IP/system: $(cat "$work/ssh.err")"
phase_end

# ------------------------------------------------------------------ meo
phase meo
cfg=$(bash "$HERE/meo-config.sh" "127.0.0.1:$MEO_PORT")
MECORCH_TOKEN=$(head -n1 "$LAB/meo.token")
export MECORCH_TOKEN
"$MECORCH" --config "$cfg" serve --role meo > "$work/meo.log" 2>&1 &
meo_pid=$!
m() { "$MECORCH" --api "$MEO_URL" -o json "$@" </dev/null; }
# hosts_ok: both REACHABLE, each with a live endpoint of the same range
hosts_ok() {
  m host list 2>/dev/null | python3 -c '
import json, sys
hosts = json.load(sys.stdin)
live = [h.get("live") or {} for h in hosts]
ok = (len(hosts) == 2 and all(h["state"] == "REACHABLE" for h in hosts)
      and all(l.get("uri") for l in live) and len({l.get("networkCidr") for l in live}) == 1)
sys.exit(0 if ok else 1)' 2>/dev/null
}
for ((i = 0; i < 120; i++)); do
  hosts_ok && break
  kill -0 "$meo_pid" 2>/dev/null || die "the MEO exited (log: $(tail -n 5 "$work/meo.log"))"
  sleep 1
done
hosts_ok || die "the MEO does not see 2 REACHABLE hosts that both take live moves: $(m host list)"
say "MEO on $MEO_URL: $SRC_ID and $DST_ID REACHABLE, both take live moves"
phase_end

# ------------------------------------------------------------------ deploy
phase deploy
jget() { python3 -c 'import json, sys; d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d; print(d[sys.argv[1]])' "$1"; }
bash "$REPO/vagrant/workloads/build-vm-image.sh" >/dev/null   # the image the package carries
"$MECORCH" package build "$REPO/examples/sample-vm-app" --zip "$work/sample-vm.zip" >/dev/null
m package onboard "$work/sample-vm.zip" >/dev/null
APP=$(m app create sample-vm --name live-smoke-vm | jget id) || die "create failed"
t0=$SECONDS
m app instantiate "$APP" --type VM --host "$SRC_ID" >/dev/null || die "instantiate on $SRC_ID failed"
on=$(m app show "$APP" | jget hostId) || die "show failed"
[ "$on" = "$SRC_ID" ] || die "the app is on $on, not $SRC_ID"
say "sample-vm instantiated on $SRC_ID in $((SECONDS - t0)) s ($APP)"

# One client namespace per host on the lab's bridge: it resolves through
# that host's MEP and reaches the service range through that host.
bridge=$(virsh -q -c qemu:///system net-info mecorch-vlab | awk '/^Bridge:/ {print $2}')
[ -n "$bridge" ] || die "no bridge for the libvirt network mecorch-vlab"
k=0
for ip in "$SRC_IP" "$DST_IP"; do
  k=$((k + 1))
  ns="$TAG$k"
  ip netns add "$ns"
  netns_made+=("$ns")
  ip link add "${ns}h" type veth peer name "${ns}c" netns "$ns"
  ip link set "${ns}h" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$((210 + k))/24" dev "${ns}c"
  ip -n "$ns" link set "${ns}c" up
  ip -n "$ns" route add "$SERVICE_CIDR" via "$ip"
  mkdir -p "/etc/netns/$ns"
  echo "nameserver $ip" > "/etc/netns/$ns/resolv.conf"
done
NS_SRC=${TAG}1 NS_DST=${TAG}2
ask() { ip netns exec "$1" curl -fsS -m "${3:-2}" "http://$NAME$2" 2>/dev/null; }
body=""
for ((i = 0; i < 60; i++)); do
  body=$(ask "$NS_SRC" /) && break
  sleep 1
done
[[ $body == *"mecorch sample vm"* ]] || die "http://$NAME/ through $SRC gave '$body'"
say "http://$NAME/ through $SRC: $body"
# The marker: one line of the guest's notice store (/run, in its RAM).
got=$(ip netns exec "$NS_SRC" curl -fsS -m 10 -X POST --data "$MARK" "http://$NAME/cgi-bin/notify") ||
  die "POST /cgi-bin/notify through $SRC failed"
[[ $got == *noted* ]] || die "POST /cgi-bin/notify gave '$got'"
[[ $(ask "$NS_SRC" "/cgi-bin/mec?notices" 10) == *"$MARK"* ]] || die "the marker is not in the guest"
say "marker $MARK written into the guest's RAM"
phase_end

# ------------------------------------------------------------------ relocate
phase relocate
# client NS LOG: every 100 ms "EPOCH_S ok|no" (an answer of the app, or none)
client() {
  while :; do
    if ip netns exec "$1" curl -fsS -m 1 "http://$NAME/" 2>/dev/null | grep -q "mecorch sample vm"; then
      echo "$(date +%s.%N) ok"
    else
      echo "$(date +%s.%N) no"
    fi
    sleep 0.1
  done > "$2"
}
client "$NS_SRC" "$work/client-src.log" &
client_pids+=($!)
client "$NS_DST" "$work/client-dst.log" &
client_pids+=($!)
sleep 2
rel_start=$(date +%s.%N)
t0=$SECONDS
"$MECORCH" --api "$MEO_URL" -o json app relocate "$APP" --live --host "$DST_ID" \
  </dev/null > "$work/relocate.json" 2> "$work/relocate.err" ||
  die "relocate --live failed: $(cat "$work/relocate.err")"
rel_s=$((SECONDS - t0))
say "relocate --live answered COMPLETED in $rel_s s"
body=""
for ((i = 0; i < 60; i++)); do
  body=$(ask "$NS_DST" /) && break
  sleep 1
done
sleep 2                                   # a few more answers from the target
for p in "${client_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
client_pids=()
[[ $body == *"mecorch sample vm"* ]] || die "http://$NAME/ through $DST gave '$body' after the relocation"
say "http://$NAME/ through $DST: $body"
phase_end

# ------------------------------------------------------------------ check
phase check
show=$(m app show "$APP") || die "show failed"
python3 - "$show" "$DST_ID" "$SRC_ID" <<'EOF' || die "the MEO's record of the move: $show"
import json, sys
inst, dst, src = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
moves = inst.get("relocatedFrom") or []
assert inst["hostId"] == dst, f"hostId {inst['hostId']}"
assert inst["instantiationState"] == "INSTANTIATED", inst["instantiationState"]
assert moves and moves[-1]["hostId"] == src, f"relocatedFrom {moves}"
assert moves[-1].get("moveType") == "LIVE", f"moveType {moves[-1].get('moveType')}"
EOF
say "the MEO: on $DST_ID, relocatedFrom $SRC_ID, moveType LIVE"
notices=$(ask "$NS_DST" "/cgi-bin/mec?notices" 10) || die "GET /cgi-bin/mec?notices through $DST failed"
[[ $notices == *"$MARK"* ]] || die "the marker is gone from the guest's RAM (it rebooted): '$notices'"
say "the guest did not reboot: its RAM still holds $MARK"
doms=$(in_host "$SRC" "virsh -q -c qemu:///system list --all --name") ||
  die "$SRC: virsh list: $(cat "$work/ssh.err")"
[ -z "${doms//[[:space:]]/}" ] || die "$SRC still holds domains: $doms"
# an instance's chains are <prefix>-<8 hex> (drivers/linux_mep/iptables.py)
chains=$(in_host "$SRC" "iptables-save" | grep -E '^:[A-Za-z0-9_]+-[0-9a-f]{8} ' || true)
[ -z "$chains" ] || die "$SRC still holds instance chains: $chains"
got=$(dig +short +time=3 +tries=1 "@$SRC_IP" "$NAME" || true)
[ -z "$got" ] || die "$SRC still answers $NAME: $got"
say "$SRC holds nothing: no domain, no instance chain, no DNS answer"
read -r down src_last dst_first < <(python3 - "$work/client-src.log" "$work/client-dst.log" "$rel_start" <<'EOF'
import sys
def oks(path):
    return [float(t) for t, r in (l.split() for l in open(path) if l.strip()) if r == "ok"]
src, dst, start = oks(sys.argv[1]), oks(sys.argv[2]), float(sys.argv[3])
dst_first = min(t for t in dst if t >= start)
src_last = max([t for t in src if t <= dst_first] or [start])
print(f"{max(0.0, dst_first - src_last):.2f} {src_last - start:.2f} {dst_first - start:.2f}")
EOF
) || die "the clients' logs: no answer through $DST"
say "downtime as the clients saw it: $down s ($SRC's last answer at +$src_last s, $DST's first at +$dst_first s of the relocate)"
phase_end

# ------------------------------------------------------------------ terminate
phase terminate
m app terminate "$APP" >/dev/null
m app delete "$APP" >/dev/null
doms=$(in_host "$DST" "virsh -q -c qemu:///system list --all --name") ||
  die "$DST: virsh list: $(cat "$work/ssh.err")"
[ -z "${doms//[[:space:]]/}" ] || die "$DST still holds domains after terminate: $doms"
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
say "relocate --live: $rel_s s, downtime $down s"
say "PASSED"
