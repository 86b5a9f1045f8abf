#!/usr/bin/env bash
# Builds the sample container workload from Debian's busybox-static, with no
# internet: a rootfs tar imported into Docker, pushed to the local registry,
# and saved as a `docker save` tar (what an app package carries).
#
# usage: build-container-image.sh [OUT_DIR] [REGISTRY]
# Output: OUT_DIR/sample-http.tar, REGISTRY/mecorch/sample-http:1.0
# Cached: does nothing when both exist.
set -euo pipefail

OUT=${1:-/var/cache/mecorch/workloads}
REGISTRY=${2:-127.0.0.1:5000}
REPO=mecorch/sample-http
TAG=1.0
REF="$REGISTRY/$REPO:$TAG"
TAR="$OUT/sample-http.tar"

say() { printf '[container-image] %s\n' "$*"; }

in_registry() {
  curl -fsS -o /dev/null \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$REPO/manifests/$TAG"
}

if [ -s "$TAR" ] && in_registry; then
  say "cached: $REF and $TAR"
  exit 0
fi

mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root="$work/rootfs"
mkdir -p "$root"/{bin,www,tmp,etc}
cp /bin/busybox "$root/bin/busybox"
for applet in sh httpd sleep cat ls echo hostname wget; do
  ln -s busybox "$root/bin/$applet"
done
echo "mecorch sample container" > "$root/www/index.html"
# PID 1 ignores SIGTERM unless it installs a handler: trap it so that a
# graceful stop ends the container at once instead of waiting for the kill.
cat > "$root/bin/serve" <<'EOF'
#!/bin/sh
trap 'kill $child 2>/dev/null; exit 0' TERM INT
hostname > /www/hostname
httpd -f -p "${PORT:-80}" -h /www &
child=$!
wait $child
EOF
chmod 755 "$root/bin/serve"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"

say "importing rootfs as $REF"
tar -C "$root" -cf "$work/rootfs.tar" .
docker import \
  --change 'CMD ["/bin/serve"]' \
  --change 'EXPOSE 80' \
  --change 'ENV PATH=/bin' \
  "$work/rootfs.tar" "$REF" >/dev/null
docker push -q "$REF" >/dev/null
docker save -o "$work/sample-http.tar" "$REF"
mv "$work/sample-http.tar" "$TAR"
say "pushed $REF; saved $TAR ($(du -h "$TAR" | cut -f1))"
