#!/usr/bin/env bash
# build-vm-image.sh - build the tiny "mecorch sample VM" disk image.
#
# Usage: build-vm-image.sh [OUT_DIR]      (run as root; default OUT_DIR below)
#
# Output: OUT_DIR/sample-vm.qcow2 and OUT_DIR/sample-vm.qcow2.sha256.
# Everything comes from Debian packages (cloud kernel, busybox-static,
# extlinux/syslinux), nothing is fetched from elsewhere.
#
# The guest: extlinux boots Debian's cloud kernel with a busybox initramfs
# that loads the virtio modules, gets an address by DHCP on eth0, serves
# /www over HTTP on port 80 and prints "MECORCH-SAMPLE-VM READY <ip>" on
# ttyS0. An ACPI power-button event (virsh shutdown / QEMU system_powerdown)
# powers it off through busybox acpid. Extra virtio disks show up as /dev/vdX.
#
# MEC: the guest reads what the platform tells it (MEC_MP1_URL,
# MEC_APP_INSTANCE_ID, MEC_APP_TOKEN) from the QEMU fw_cfg file
# opt/org.mecorch/env (/sys/firmware/qemu_fw_cfg/by_name/.../raw: mecorch's
# VIM passes it as a file, so the token is never on QEMU's command line) and,
# from older VIMs, its SMBIOS type 11 OEM strings (/sys/firmware/dmi/
# entries/11-*/raw), into /run/mec.env, publishes its instance id at
# /mec-instance, and answers
# /cgi-bin/mec (a sample MEC client to drive from the host: resolve a name,
# fetch a URL, call its own Mp1 and the service management API with its
# token, read the notifications /cgi-bin/notify received; see below). Its
# resolver is the one DHCP names (the MEP's DNS on the network's gateway).
#
# Idempotent: a finished image whose checksum verifies and whose recorded
# build key (the SHA-256 of this script) matches is reused ("cached"): a
# changed script rebuilds. Set FORCE=1 to rebuild anyway. The kernel/busybox .debs are kept in
# OUT_DIR/cache/ so a rebuild does not download them again.
set -euo pipefail

OUT_DIR=${1:-/var/cache/mecorch/workloads}
IMG_NAME=sample-vm.qcow2
DISK_MB=64                         # raw disk; kernel (~14 MB) + initrd fit easily
KERNEL_META=linux-image-cloud-amd64
# Modules the guest needs; dependencies are resolved from modules.dep.
# virtio_* are =m in Debian's cloud kernel (only ext4 etc. are built in);
# so is qemu_fw_cfg (CONFIG_FW_CFG_SYSFS=m), which shows the fw_cfg files
# under /sys/firmware/qemu_fw_cfg (the MEC environment).
REQUIRED_MODULES="virtio_pci virtio_blk virtio_net qemu_fw_cfg"
# For ACPI power-button shutdown: button creates the input device,
# evdev exposes it as /dev/input/eventN for busybox acpid.
OPTIONAL_MODULES="button evdev"

log() { echo "[build-vm-image] $*"; }
die() { echo "[build-vm-image] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (loop devices, mount, apt)"
mkdir -p "$OUT_DIR/cache"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
IMG="$OUT_DIR/$IMG_NAME"
SUM="$IMG.sha256"
KEY_FILE="$IMG.key"
BUILD_KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)

# The .sha256 holds a plain "sha256sum" line with a relative file name, so it
# verifies from OUT_DIR.
is_cached() {
    [[ -s $IMG && -s $SUM && "$(cat "$KEY_FILE" 2>/dev/null)" == "$BUILD_KEY" ]] &&
        (cd "$OUT_DIR" && sha256sum --check --status "$IMG_NAME.sha256")
}
report_cached() {
    log "cached"
    echo "$IMG"
    cat "$SUM"
}

if [[ ${FORCE:-0} != 1 ]] && is_cached; then
    report_cached
    exit 0
fi

# Serialise concurrent builds into the same OUT_DIR; re-check after the wait
# because the other build may have just produced the image.
exec 9>"$OUT_DIR/.sample-vm.lock"
flock 9
if [[ ${FORCE:-0} != 1 ]] && is_cached; then
    report_cached
    exit 0
fi

# --- temp dir + cleanup on every exit path --------------------------------
# The temp dir lives inside OUT_DIR so the final mv is an atomic rename.
TMP=$(mktemp -d "$OUT_DIR/.sample-vm-build.XXXXXX")
RAW="$TMP/disk.raw"
MNT="$TMP/mnt"
LOOP=""
cleanup() {
    local rc=$?
    set +e
    if [[ -d $MNT ]] && mountpoint -q "$MNT"; then
        umount "$MNT" || umount -l "$MNT"
    fi
    # Detach our loop device, and also anything else still backed by our raw
    # file (covers a signal arriving between "losetup --show" and LOOP=...).
    [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null
    if [[ -e $RAW ]]; then
        local dev
        for dev in $(losetup -n -O NAME -j "$RAW" 2>/dev/null); do
            losetup -d "$dev"
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# --- host tools --------------------------------------------------------------
# Another apt/dpkg may be running (e.g. a provisioning script): wait for it
# instead of failing on the dpkg lock.
wait_for_apt() {
    local i
    for ((i = 0; i < 900; i++)); do
        if ! pgrep -x apt-get >/dev/null && ! pgrep -x apt >/dev/null &&
           ! pgrep -x dpkg >/dev/null &&
           ! fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then
            return 0
        fi
        ((i % 30 == 0)) && log "waiting for another apt/dpkg to finish..."
        sleep 2
    done
    die "apt/dpkg still busy after 30 min"
}
pkg_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

# busybox-static is NOT installed on the host on purpose (it replaces the
# host's busybox); its binary is taken from the .deb like the kernel.
HOST_PKGS="cpio extlinux syslinux-common qemu-utils fdisk e2fsprogs kmod xz-utils util-linux gzip"
missing=""
for p in $HOST_PKGS; do pkg_installed "$p" || missing+=" $p"; done
if [[ -n $missing ]]; then
    log "installing:$missing"
    wait_for_apt
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 $missing >/dev/null
fi

# --- Debian packages (kernel, busybox-static), cached in OUT_DIR/cache ------
CACHE="$OUT_DIR/cache"
apt_updated=0
# Resolve the package a metapackage currently points to.
resolve_dep() {  # $1=metapackage $2=regex of the wanted dependency
    apt-cache depends "$1" 2>/dev/null | awk -v re="$2" '$1 == "Depends:" && $2 ~ re { print $2; exit }'
}
# fetch_deb PKG -> prints path of PKG_*.deb in the cache, downloading if needed
fetch_deb() {
    local pkg=$1 deb
    deb=$(ls -1 "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [[ -n $deb ]] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
        log "using cached $(basename "$deb")" >&2
        echo "$deb"; return 0
    fi
    rm -f "$CACHE/${pkg}"_*.deb
    log "downloading $pkg" >&2
    mkdir -p "$TMP/dl"
    # Sandbox::User=root: the _apt user cannot write into our temp dir.
    (cd "$TMP/dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
        return 1
    deb=$(ls -1 "$TMP/dl/${pkg}"_*.deb | head -n1)
    mv "$deb" "$CACHE/"
    echo "$CACHE/$(basename "$deb")"
}

KPKG=${KERNEL_PKG:-$(resolve_dep "$KERNEL_META" '^linux-image-[0-9]')}
if [[ -z $KPKG ]]; then
    # No candidate: maybe the apt lists are empty. Prefer an already cached
    # kernel over touching the network; otherwise refresh the lists once.
    cached=$(ls -1 "$CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [[ -n $cached ]]; then
        KPKG=$(basename "$cached"); KPKG=${KPKG%%_*}
    else
        log "apt lists lack $KERNEL_META, running apt-get update"
        wait_for_apt
        apt-get update -q >/dev/null
        apt_updated=1
        KPKG=$(resolve_dep "$KERNEL_META" '^linux-image-[0-9]')
    fi
fi
[[ -n $KPKG ]] || die "cannot resolve the kernel package behind $KERNEL_META"
KVER=${KPKG#linux-image-}
log "kernel package: $KPKG"

if ! KDEB=$(fetch_deb "$KPKG"); then
    # Stale apt lists: the mirror may have moved on to a newer kernel ABI
    # (a different package name), so refresh once and resolve again.
    [[ $apt_updated == 0 && -z ${KERNEL_PKG:-} ]] || die "apt-get download $KPKG failed"
    log "download failed, refreshing apt lists"
    wait_for_apt
    apt-get update -q >/dev/null
    apt_updated=1
    KPKG=$(resolve_dep "$KERNEL_META" '^linux-image-[0-9]')
    [[ -n $KPKG ]] || die "cannot resolve the kernel package behind $KERNEL_META"
    KVER=${KPKG#linux-image-}
    log "kernel package: $KPKG"
    KDEB=$(fetch_deb "$KPKG") || die "apt-get download $KPKG failed"
fi
# Keep only the current kernel .deb in the cache.
for old in "$CACHE"/linux-image-*-cloud-amd64_*.deb; do
    [[ -e $old && $old != "$KDEB" ]] && rm -f "$old"
done

KROOT="$TMP/kernel"
log "unpacking $(basename "$KDEB")"
dpkg-deb -x "$KDEB" "$KROOT"
VMLINUZ="$KROOT/boot/vmlinuz-$KVER"
[[ -f $VMLINUZ ]] || die "no /boot/vmlinuz-$KVER in $KDEB"
# bookworm ships /lib/modules; newer releases use /usr/lib/modules.
if [[ ! -d $KROOT/lib/modules/$KVER && -d $KROOT/usr/lib/modules/$KVER ]]; then
    mkdir -p "$KROOT/lib"; ln -s ../usr/lib/modules "$KROOT/lib/modules"
fi
[[ -d $KROOT/lib/modules/$KVER ]] || die "no modules for $KVER in $KDEB"
# The .deb carries no modules.dep (its postinst runs depmod): build one.
depmod -b "$KROOT" "$KVER"

# busybox-static: use the host's copy if that package is installed,
# otherwise take the binary out of the (cached) .deb.
if pkg_installed busybox-static; then
    BUSYBOX=/bin/busybox
else
    BBDEB=$(fetch_deb busybox-static) || die "apt-get download busybox-static failed"
    dpkg-deb -x "$BBDEB" "$TMP/bb"
    BUSYBOX="$TMP/bb/bin/busybox"
fi
# It must be static: the initramfs has no libc.
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is not statically linked"; fi
# (The list goes to a file first: grep -q would end the pipe early, and
# pipefail would take busybox's SIGPIPE for a missing applet.)
"$BUSYBOX" --list > "$TMP/applets"
for applet in acpid udhcpc httpd insmod ip poweroff nslookup nc dd tr grep sed head; do
    grep -qx "$applet" "$TMP/applets" || die "busybox lacks the $applet applet"
done

# --- initramfs -------------------------------------------------------------
IRD="$TMP/initramfs"
mkdir -p "$IRD"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc/acpi/PWRF,lib/modules,var/log,var/run,www/cgi-bin}
cp "$BUSYBOX" "$IRD/bin/busybox"
ln -s busybox "$IRD/bin/sh"
# The kernel opens /dev/console before /init runs, so the node must exist in
# the archive itself (devtmpfs is mounted only later, by /init).
mknod -m 600 "$IRD/dev/console" c 5 1
mknod -m 666 "$IRD/dev/null" c 1 3

# Kernel modules in dependency order ("modprobe --show-depends" prints the
# insmod sequence). Files are renamed NN-name.ko and listed in
# /etc/modules.list; busybox insmod cannot read compressed modules, so
# .ko.xz/.ko.zst/.ko.gz are decompressed here.
: > "$IRD/etc/modules.list"
n=0
add_module() {  # $1=module name, $2=required|optional
    local deps line path base
    if ! deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$1" 2>/dev/null); then
        [[ $2 == required ]] && die "module $1 not found in $KVER"
        log "note: module $1 not available, skipped"; return 0
    fi
    while read -r line; do
        case $line in
            insmod\ *) path=${line#insmod }; path=${path%% *} ;;
            *) continue ;;   # "builtin xyz": nothing to load
        esac
        base=$(basename "$path"); base=${base%%.ko*}
        grep -q -- "-$base.ko\$" "$IRD/etc/modules.list" && continue
        n=$((n + 1))
        local dst
        dst=$(printf '%02d-%s.ko' "$n" "$base")
        case $path in
            *.ko.xz)  xz -dc "$path" > "$IRD/lib/modules/$dst" ;;
            *.ko.zst) zstd -qdc "$path" > "$IRD/lib/modules/$dst" ;;
            *.ko.gz)  gzip -dc "$path" > "$IRD/lib/modules/$dst" ;;
            *)        cp "$path" "$IRD/lib/modules/$dst" ;;
        esac
        echo "$dst" >> "$IRD/etc/modules.list"
    done <<< "$deps"
}
for m in $REQUIRED_MODULES; do add_module "$m" required; done
for m in $OPTIONAL_MODULES; do add_module "$m" optional; done
log "modules: $(sed 's/^[0-9]*-//; s/\.ko$//' "$IRD/etc/modules.list" | tr '\n' ' ')"

echo "mecorch sample vm" > "$IRD/www/index.html"
echo "mecorch-sample-vm" > "$IRD/etc/hostname"
printf '127.0.0.1 localhost\n' > "$IRD/etc/hosts"

# busybox init takes over as PID 1 once /init has started the services: it
# reaps orphans and needs no terminal. Only a shutdown action is listed, so
# it spawns no shells on the (often unattended) console.
cat > "$IRD/etc/inittab" <<'EOF'
::shutdown:/bin/sync
EOF

cat > "$IRD/init" <<'EOF'
#!/bin/sh
# PID 1 of the mecorch sample VM: busybox only, everything in RAM.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "MECORCH-SAMPLE-VM $*"; }

# virtio (pci, blk, net + deps), then button/evdev for the power button.
for m in $(cat /etc/modules.list); do
    insmod "/lib/modules/$m" || say "WARN insmod $m failed"
done

# Graceful shutdown: button.ko turns the ACPI power button into an input
# device, evdev gives it /dev/input/eventN, acpid maps KEY_POWER to "PWRF"
# and runs /etc/acpi/PWRF/00000080, which powers off. acpid only opens the
# event devices present at its start, so it runs after the insmods.
if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -c /etc/acpi -l /var/log/acpid.log
else
    say "WARN no input event device: ACPI shutdown unavailable"
fi

hostname -F /etc/hostname
hostname > /www/hostname
ip link set lo up

# What the MEC platform tells this app, "KEY=VALUE" strings, NUL-separated:
# the fw_cfg file opt/org.mecorch/env (mecorch's VIM), or SMBIOS type 11 OEM
# strings (after the 5-byte structure header; older VIMs). The token stays
# in /run/mec.env (0600); the instance id is published.
: > /run/mec.env
chmod 600 /run/mec.env
for t in /sys/firmware/dmi/entries/11-*/raw; do
    [ -r "$t" ] || continue
    dd if="$t" bs=1 skip=5 2>/dev/null | tr '\0' '\n' | grep '^MEC_[A-Z0-9_]*=' >> /run/mec.env
done
fwcfg=/sys/firmware/qemu_fw_cfg/by_name/opt/org.mecorch/env/raw
if [ -r "$fwcfg" ]; then
    tr '\0' '\n' < "$fwcfg" | grep '^MEC_[A-Z0-9_]*=' >> /run/mec.env
fi
sed -n 's/^MEC_APP_INSTANCE_ID=//p' /run/mec.env > /www/mec-instance
say "MEC instance $(cat /www/mec-instance) Mp1 $(sed -n 's/^MEC_MP1_URL=//p' /run/mec.env)"

# Extra virtio disks (virtio_blk probes synchronously, give the nodes a moment).
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vda ] && break; sleep 0.2; done
disks=$(cd /dev && ls -d vd? 2>/dev/null | tr '\n' ' ')
echo "$disks" > /www/disks
say "DISKS ${disks:-none}"

httpd -p 80 -h /www
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    # -b: go to the background once leased (or after 5 tries), keep retrying
    # and renewing there; the hook script writes the address to /run/ip.
    udhcpc -i eth0 -s /etc/udhcpc.script -b -t 5 -T 2 -A 3
else
    say "WARN no eth0"
fi

# Announce readiness once there is an address and httpd answers; done in the
# background so PID 1 (busybox init) starts right away.
(
    while [ ! -s /run/ip ]; do sleep 0.2; done
    while ! wget -q -O /dev/null http://127.0.0.1/; do sleep 0.2; done
    say "READY $(cat /run/ip)"
) &

exec /bin/busybox init
EOF
chmod 755 "$IRD/init"

cat > "$IRD/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc hook (no ifupdown in the guest): apply the lease to $interface.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    rm -f /run/ip
    ;;
bound|renew)
    # Re-add the address only when it changed, so a renew does not cut
    # established connections.
    if [ "$(cat /run/ip 2>/dev/null)" != "$ip" ]; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    fi
    if [ -n "$router" ]; then
        while ip route del default dev "$interface" 2>/dev/null; do :; done
        for r in $router; do
            ip route add default via "$r" dev "$interface" && break
        done
    fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    if [ -n "$hostname" ]; then
        hostname "$hostname"
        echo "$hostname" > /www/hostname
    fi
    echo "$ip" > /run/ip
    ;;
esac
exit 0
EOF
chmod 755 "$IRD/etc/udhcpc.script"

# The sample MEC client, as CGI of the guest's httpd (the guest has no
# shell access; a test or the demo drives it from the host over HTTP).
# /cgi-bin/mec?QUERY, QUERY one of
#   env | resolve=NAME | fetch=URL | notices
#   [method=M&]mp1=PATH   $MEC_MP1_URL/PATH with the app's token
#   [method=M&]srv=PATH   the MEC 011 service management API beside Mp1:
#                         ${MEC_MP1_URL%/mec_app_support/v1}/mec_service_mgmt/v1/PATH
# PATH is the rest of the query string, passed on as it came (URL-encoded
# by the caller; it may carry a query of its own: srv=services?ser_name=x).
# M is GET, PUT, POST or DELETE; without it: GET, or PUT of the request body
# when the request has one (a POST). A body goes on as JSON.
# /cgi-bin/notify: a notification receiver (a subscription's callback): a
# POSTed body becomes one line of /run/notices, which `notices` prints.
# HTTP answers come back whole (status line, headers, body). HTTP is spoken
# with nc: busybox-static's wget calls glibc's NSS, which a static binary
# without NSS modules crashes in.
cat > "$IRD/www/cgi-bin/mec" <<'CGI'
#!/bin/sh
MAX_BODY=65536
get() { sed -n "s/^$1=//p" /run/mec.env; }
# http METHOD URL [BODY] [AUTHORIZATION]: one HTTP/1.0 exchange, printed whole
http() {
    hp=${2#http://}
    hostport=${hp%%/*}
    path=/${hp#*/}
    [ "$hostport" = "$hp" ] && path=/
    host=${hostport%:*}
    port=${hostport##*:}
    [ "$port" = "$hostport" ] && port=80
    {
        printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$1" "$path" "$hostport"
        [ -n "$4" ] && printf 'Authorization: Bearer %s\r\n' "$4"
        # Content-Length in bytes (${#3} may count characters)
        case $1 in PUT|POST) printf 'Content-Type: application/json\r\nContent-Length: %s\r\n' \
            "$(printf '%s' "$3" | wc -c)" ;; esac
        printf '\r\n'
        case $1 in PUT|POST) printf '%s' "$3" ;; esac
    } | nc -w 5 "$host" "$port"
}
fail() { echo "$*"; exit 0; }
# call BASE_URL: the app's own API at BASE_URL/$path with its token
call() {
    case $path in
        '') fail "no PATH" ;;
        *..*) fail "PATH must not hold '..'" ;;
        *[!A-Za-z0-9._~%/?=\&:,+@-]*) fail "PATH holds a character a URL does not (URL-encode it)" ;;
    esac
    body=""
    if [ "$REQUEST_METHOD" = POST ]; then
        n=${CONTENT_LENGTH:-0}
        case $n in *[!0-9]*|'') fail "bad Content-Length" ;; esac
        [ ${#n} -le 9 ] && [ "$n" -le $MAX_BODY ] || fail "body larger than $MAX_BODY bytes"
        body=$(head -c "$n")
        [ -n "$method" ] || method=PUT
    fi
    http "${method:-GET}" "$1/$path" "$body" "$(get MEC_APP_TOKEN)"
}
printf 'Content-Type: text/plain\r\n\r\n'
q=$QUERY_STRING
method=""
case $q in
method=*\&*)
    method=${q%%&*}; method=${method#method=}; q=${q#*&}
    case $method in GET|PUT|POST|DELETE) ;; *) fail "method: GET, PUT, POST or DELETE" ;; esac
    case $q in mp1=*|srv=*) ;; *) fail "method= goes with mp1=PATH or srv=PATH" ;; esac ;;
esac
case $q in
env)
    echo "MEC_APP_INSTANCE_ID=$(get MEC_APP_INSTANCE_ID)"
    echo "MEC_MP1_URL=$(get MEC_MP1_URL)"
    [ -n "$(get MEC_APP_TOKEN)" ] && echo "MEC_APP_TOKEN=(given)" ;;
resolve=*)
    nslookup "${q#resolve=}" 2>&1 ;;
fetch=http://*)
    http GET "${q#fetch=}" ;;
notices)
    cat /run/notices 2>/dev/null ;;
mp1=*)
    path=${q#mp1=}
    call "$(get MEC_MP1_URL)" ;;
srv=*)
    path=${q#srv=}
    mp1=$(get MEC_MP1_URL)
    case $mp1 in */mec_app_support/v1) ;; *) fail "MEC_MP1_URL does not end in /mec_app_support/v1" ;; esac
    call "${mp1%/mec_app_support/v1}/mec_service_mgmt/v1" ;;
*)
    echo "unknown action: use env, resolve=NAME, fetch=URL, notices, [method=M&]mp1=PATH or [method=M&]srv=PATH" ;;
esac
CGI
chmod 755 "$IRD/www/cgi-bin/mec"

# The notification receiver: anyone on the network may POST to it, so a
# body is bounded (16 KiB) and so is the store (256 KiB; then 507, the
# sender retries). One line per notification (JSON has no raw newlines
# that matter), appended under a lock directory (busybox has no flock).
cat > "$IRD/www/cgi-bin/notify" <<'CGI'
#!/bin/sh
MAX_BODY=16384
MAX_STORE=262144
STORE=/run/notices
LOCK=/run/notices.lock
reply() { printf 'Status: %s\r\nContent-Type: text/plain\r\n\r\n%s\n' "$1" "$2"; exit 0; }
[ "$REQUEST_METHOD" = POST ] || reply "405 Method Not Allowed" "POST a notification"
n=${CONTENT_LENGTH:-}
case $n in *[!0-9]*|'') reply "411 Length Required" "Content-Length needed" ;; esac
[ ${#n} -le 9 ] && [ "$n" -le $MAX_BODY ] || reply "413 Payload Too Large" "at most $MAX_BODY bytes"
body=$(head -c "$n" | tr '\r\n' '  ')
i=0
until mkdir "$LOCK" 2>/dev/null; do
    i=$((i + 1))
    [ $i -ge 50 ] && break          # a holder that died: take it over
    sleep 0.1
done
size=$(wc -c < "$STORE" 2>/dev/null || echo 0)
if [ $((size + ${#body} + 1)) -gt $MAX_STORE ]; then
    rmdir "$LOCK" 2>/dev/null
    reply "507 Insufficient Storage" "notice store full"
fi
printf '%s\n' "$body" >> "$STORE"
rmdir "$LOCK" 2>/dev/null
reply "200 OK" "noted"
CGI
chmod 755 "$IRD/www/cgi-bin/notify"

# acpid: default action table maps the PWRF event to PWRF/00000080 under -c.
# "#!/bin/sh" matters: acpid ignores SIGCHLD, a shell resets it.
cat > "$IRD/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "MECORCH-SAMPLE-VM POWERDOWN (ACPI power button)" > /dev/console
sync
poweroff -f
EOF
chmod 755 "$IRD/etc/acpi/PWRF/00000080"

log "packing initramfs"
(cd "$IRD" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc -R 0:0 --quiet) | gzip -9 -n > "$TMP/initrd.gz"

# --- disk image ----------------------------------------------------------------
# MBR with one bootable ext4 partition; extlinux on it, syslinux mbr.bin in
# the MBR (it chain-loads the active partition's boot sector).
log "creating ${DISK_MB} MB disk"
truncate -s "${DISK_MB}M" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
# No udev here: loopNp1 nodes never appear, so map the partition by offset.
read -r PSTART PSIZE < <(sfdisk --dump "$RAW" |
    awk -F'[=,]' '/start=/ { gsub(/ /, ""); print $2, $4; exit }')
[[ $PSTART =~ ^[0-9]+$ && $PSIZE =~ ^[0-9]+$ ]] || die "cannot parse the partition table"
LOOP=$(losetup --find --show --offset $((PSTART * 512)) --sizelimit $((PSIZE * 512)) "$RAW")
log "partition at sector $PSTART ($PSIZE sectors) on $LOOP"
# No journal (the guest never mounts it), and no 64bit/metadata_csum so the
# syslinux ext4 reader has nothing unusual to deal with.
mkfs.ext4 -q -F -L mecorch-boot -O ^has_journal,^64bit,^metadata_csum "$LOOP"
mkdir -p "$MNT"
mount -t ext4 "$LOOP" "$MNT"
mkdir -p "$MNT/boot/extlinux"
cp "$VMLINUZ" "$MNT/boot/vmlinuz"
cp "$TMP/initrd.gz" "$MNT/boot/initrd.gz"
# TIMEOUT is in 1/10 s; PROMPT 0 boots the default at once.
cat > "$MNT/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
PROMPT 0
TIMEOUT 1
DEFAULT mecorch
LABEL mecorch
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.gz
  APPEND console=ttyS0,115200 quiet panic=10
EOF
echo "$KVER" > "$MNT/boot/kernel-version"
extlinux --install "$MNT/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
umount "$MNT"
losetup -d "$LOOP"
LOOP=""
MBR_BIN=""
for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/EXTLINUX/mbr.bin; do
    [[ -f $f ]] && { MBR_BIN=$f; break; }
done
[[ -n $MBR_BIN ]] || die "syslinux mbr.bin not found"
# 440 bytes: boot code only, keep the partition table and disk signature.
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none

log "converting to qcow2"
qemu-img convert -q -f raw -O qcow2 "$RAW" "$TMP/$IMG_NAME"
rm -f "$RAW"

# --- publish atomically ----------------------------------------------------
(cd "$TMP" && sha256sum "$IMG_NAME") > "$TMP/$IMG_NAME.sha256"
mv -f "$TMP/$IMG_NAME" "$IMG"
mv -f "$TMP/$IMG_NAME.sha256" "$SUM"
echo "$BUILD_KEY" > "$KEY_FILE"
log "built $(du -k "$IMG" | cut -f1) KiB image, kernel $KVER"
echo "$IMG"
cat "$SUM"
