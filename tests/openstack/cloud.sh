#!/usr/bin/env bash
# The all-in-one OpenStack test cloud: builds (once, cached) and starts one
# Docker container that runs Keystone, Glance, Placement, Nova (libvirt,
# QEMU TCG) and Neutron (ML2 linuxbridge, flat network, DHCP) from Debian 12's
# own packages, then prints the clouds.yaml to use.
#
#   bash tests/openstack/cloud.sh [up]     build if needed, start, wait, print clouds.yaml
#   bash tests/openstack/cloud.sh clouds   print clouds.yaml (cloud must be up)
#   bash tests/openstack/cloud.sh status   exit 0 when every API answers
#   bash tests/openstack/cloud.sh down     remove the container (the image stays cached)
#   bash tests/openstack/cloud.sh rebuild  forget the cached images, then up
#
# Idempotent: a running, healthy cloud is left alone; a stopped one is
# started again; the images are rebuilt only when the files that define them
# change (their digest is in the tag). It touches nothing of the host's but
# its own images and container: dockerd's configuration, the host's libvirtd
# and iptables are left as they are (the container has its own network
# namespace, libvirtd, bridges and iptables). The APIs are published on
# 127.0.0.1 only, with the same port inside and outside, so one catalog URL
# serves the host and the services inside.
#
# Knobs: MECORCH_OS_CLOUDS_YAML (default /etc/mecorch/openstack-clouds.yaml),
#        MECORCH_OS_NAME (container name, default mecorch-os-aio).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${MECORCH_OS_NAME:-mecorch-os-aio}
# A Docker network of its own (its own bridge): the container does not
# depend on docker0, which other labs on a shared host may tear down.
NET=${MECORCH_OS_NETWORK:-mecorch-os}
CLOUDS_YAML=${MECORCH_OS_CLOUDS_YAML:-/etc/mecorch/openstack-clouds.yaml}
CACHE=/var/cache/mecorch/openstack
MIRROR=http://deb.debian.org/debian
# Keystone cannot have 5000 (the registry's); every other API keeps its port.
PORTS=(35357 9292 8778 8774 9696)
ADMIN_PASSWORD=mecorch-test-cloud   # a throwaway test cloud on loopback only

say() { printf '[os-cloud %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[os-cloud] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it talks to dockerd and builds a rootfs)"
docker info >/dev/null 2>&1 || die "dockerd is not answering (run vagrant/provision.sh first)"

digest() { cat "$@" | sha256sum | cut -c1-12; }
# Stage images: each tag carries the digest of what defines it, so a change
# rebuilds that stage and the ones after it, and nothing else.
BASE_TAG=mecorch-os-base:$(digest "$HERE/packages.txt" <(echo "$MIRROR bookworm minbase 1"))
AIO_TAG=mecorch-os-aio:$(digest "$HERE/packages.txt" "$HERE/aio.sh" "$HERE/bootstrap.py")

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Capabilities: every one Docker 20.10 knows but CAP_SYS_RESOURCE, which this dockerd lacks
# (so --privileged is refused here).
CAPS=(AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND CHOWN
      DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE
      LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE
      NET_BROADCAST NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_ADMIN SYS_BOOT
      SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_TIME
      SYS_TTY_CONFIG SYSLOG WAKE_ALARM)
run_opts() {
  local o=(--hostname os-aio --label mecorch.test-cloud=1 --network "$NET"
           --security-opt seccomp=unconfined --security-opt apparmor=unconfined
           --security-opt systempaths=unconfined
           --device /dev/net/tun --device-cgroup-rule 'a *:* rwm')
  for c in "${CAPS[@]}"; do o+=(--cap-add "$c"); done
  printf '%s\n' "${o[@]}"
}
mapfile -t RUN_OPTS < <(run_opts)

build_base() {
  have_image "$BASE_TAG" && return
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  local root="$CACHE/rootfs.$$"
  rm -rf "$root"; mkdir -p "$root"
  say "debootstrap bookworm (minbase) -> $root"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  # No init in the container: package scripts must not try to start services.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/01-nodoc"
  say "docker import -> $BASE_TAG.raw"
  tar -C "$root" -c . | docker import - "$BASE_TAG.raw" >/dev/null
  rm -rf "$root"
  say "apt-get install $(grep -vc '^#' "$HERE/packages.txt") packages (and their dependencies)"
  local c="$NAME-build-pkgs"
  docker rm -f "$c" >/dev/null 2>&1 || true
  # shellcheck disable=SC2046
  docker run --name "$c" --network "$NET" -e DEBIAN_FRONTEND=noninteractive "$BASE_TAG.raw" sh -c \
    "apt-get update -q && apt-get install -y -q --no-install-recommends $(grep -v '^#' "$HERE/packages.txt" | tr '\n' ' ') && apt-get clean && rm -rf /var/lib/apt/lists/*" \
    >"$CACHE/apt.log" 2>&1 || { tail -30 "$CACHE/apt.log" >&2; docker rm -f "$c" >/dev/null; die "apt-get install failed (log: $CACHE/apt.log)"; }
  docker commit "$c" "$BASE_TAG" >/dev/null
  docker rm -f "$c" >/dev/null
  docker rmi "$BASE_TAG.raw" >/dev/null
}

build_aio() {
  have_image "$AIO_TAG" && return
  local c="$NAME-build-aio"
  docker rm -f "$c" >/dev/null 2>&1 || true
  say "configuring the services, database migrations, bootstrap -> $AIO_TAG"
  docker create --name "$c" "${RUN_OPTS[@]}" "$BASE_TAG" /usr/local/sbin/aio configure >/dev/null
  docker cp "$HERE/aio.sh" "$c:/usr/local/sbin/aio"
  docker cp "$HERE/bootstrap.py" "$c:/usr/local/sbin/aio-bootstrap.py"
  docker start -a "$c" >"$CACHE/configure.log" 2>&1 \
    || { tail -40 "$CACHE/configure.log" >&2; die "configure failed (log: $CACHE/configure.log; container $c kept)"; }
  docker commit --change 'CMD ["/usr/local/sbin/aio", "run"]' "$c" "$AIO_TAG" >/dev/null
  docker rm -f "$c" >/dev/null
}

ensure_network() {
  docker network inspect "$NET" >/dev/null 2>&1 ||
    docker network create --label mecorch.test-cloud=1 "$NET" >/dev/null
}

container_image() { docker inspect -f '{{.Config.Image}}' "$NAME" 2>/dev/null || true; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

start_container() {
  local img; img=$(container_image)
  if [ -n "$img" ] && [ "$img" != "$AIO_TAG" ]; then
    say "container $NAME runs an older image ($img): replacing it"
    docker rm -f "$NAME" >/dev/null
    img=""
  fi
  if [ -n "$img" ] && ! docker inspect -f '{{json .NetworkSettings.Networks}}' "$NAME" | grep -q "\"$NET\""; then
    say "container $NAME is not on network $NET: replacing it"
    docker rm -f "$NAME" >/dev/null
    img=""
  fi
  if [ -z "$img" ]; then
    local pub=()
    for p in "${PORTS[@]}"; do pub+=(-p "127.0.0.1:$p:$p"); done
    say "starting container $NAME"
    docker run -d --init --name "$NAME" "${RUN_OPTS[@]}" "${pub[@]}" "$AIO_TAG" >/dev/null
  elif ! running; then
    say "starting stopped container $NAME"
    docker start "$NAME" >/dev/null
  fi
}

wait_ready() {
  local deadline=$((SECONDS + ${1:-420}))
  until docker exec "$NAME" /usr/local/sbin/aio ready >/dev/null 2>&1; do
    running || { docker logs --tail 40 "$NAME" >&2; die "container $NAME stopped"; }
    [ $SECONDS -lt $deadline ] || { docker exec "$NAME" /usr/local/sbin/aio ready >&2 || true; die "cloud not ready in time"; }
    sleep 3
  done
}

clouds_yaml() {
  cat <<EOF
# The mecorch all-in-one OpenStack test cloud (tests/openstack/cloud.sh).
clouds:
  mecorch-test:
    auth:
      auth_url: http://127.0.0.1:35357/v3
      username: admin
      password: $ADMIN_PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    interface: public
EOF
}

case "${1:-up}" in
  up)
    mkdir -p "$CACHE" "$(dirname "$CLOUDS_YAML")"
    t0=$SECONDS
    ensure_network
    build_base
    build_aio
    start_container
    wait_ready
    clouds_yaml >"$CLOUDS_YAML"
    say "cloud ready in $((SECONDS - t0)) s; clouds.yaml written to $CLOUDS_YAML (cloud 'mecorch-test'):"
    clouds_yaml
    ;;
  base) mkdir -p "$CACHE"; ensure_network; build_base ;;   # the package stage alone
  clouds) clouds_yaml ;;
  status) running && docker exec "$NAME" /usr/local/sbin/aio ready ;;
  down) docker rm -f "$NAME" >/dev/null 2>&1 || true; say "container $NAME removed (images kept)" ;;
  rebuild)
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    docker rmi "$AIO_TAG" "$BASE_TAG" >/dev/null 2>&1 || true
    exec bash "$0" up ;;
  *) die "unknown command '$1' (up, clouds, status, down, rebuild)" ;;
esac
