#!/usr/bin/env bash
# Builds the Vagrant lab box "mecorch/debian12" (libvirt provider) locally
# from Debian 12 packages, and adds it with `vagrant box add`. Idempotent:
# the box is rebuilt only when one of its inputs changed (this script,
# vagrant/provision.sh, pyproject.toml, the workload scripts); else it says
# "cached". Run as root on the workstation.
#
# What the box carries, so that `vagrant up` only checks and starts (a bare
# guest took ~50 min to provision under TCG):
#   - every Debian package vagrant/provision.sh installs (read from its
#     PACKAGES list), AppArmor's userspace (Docker refuses to start without
#     apparmor_parser on a kernel with AppArmor), rsync for the synced folder;
#   - the mecorch virtualenv /opt/mecorch/venv with libvirt-python built,
#     installed from wheels made on this host (a guest has neither this
#     host's package index settings nor its CA), editable on /opt/mecorch/src
#     where the Vagrantfile syncs the tree; provision.sh's install stamp;
#   - the sample VM image (/var/cache/mecorch/workloads, built here);
#   - the `vagrant` user with Vagrant's insecure public key and passwordless
#     sudo; systemd-networkd with DHCP on eth0; an empty machine-id (each
#     guest makes its own, so DHCP does not hand two guests one address).
# It also makes the libvirt storage pool the Vagrantfile uses (there is no
# pool named "default" on these machines).
#
# Environment: MECORCH_BOX (box name, default mecorch/debian12),
#   MECORCH_VLAB_POOL (pool, default mecorch-vlab), FORCE=1 (rebuild).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BOX=${MECORCH_BOX:-mecorch/debian12}
POOL=${MECORCH_VLAB_POOL:-mecorch-vlab}
POOL_DIR=/var/lib/mecorch-vlab/pool
CACHE=/var/cache/mecorch/vagrant-box
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
DISK_GB=12
HOST_VENV=/opt/mecorch/venv          # only its pip is used, to make wheels
insecure_key() {
  # (|| true: before vagrant is installed the folder does not exist, and a
  # failed substitution would end the script silently under set -e)
  find /usr/share/rubygems-integration/all/gems/ -path '*/vagrant-*/keys/vagrant.pub' 2>/dev/null | head -n1 || true
}
INSECURE_KEY=$(insecure_key)

say() { printf '[box] %s\n' "$*"; }
die() { printf '[box] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, loop devices, libvirt)"

# ------------------------------------------------------------ workstation
host_pkgs=(debootstrap qemu-utils extlinux syslinux-common fdisk e2fsprogs rsync
           vagrant vagrant-libvirt libvirt-clients)
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing on the workstation: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"
  INSECURE_KEY=$(insecure_key)
fi
[ -s "$INSECURE_KEY" ] || die "Vagrant's insecure public key not found (package vagrant)"

# The storage pool vagrant-libvirt puts the box image and the guests' disks in.
virsh_() { virsh -q -c qemu:///system "$@"; }
if ! virsh_ pool-info "$POOL" >/dev/null 2>&1; then
  say "defining libvirt pool $POOL at $POOL_DIR"
  mkdir -p "$POOL_DIR"
  virsh_ pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
  virsh_ pool-autostart "$POOL" >/dev/null
fi
if [ "$(virsh_ pool-info "$POOL" | awk '/^State:/ {print $2}')" != running ]; then
  virsh_ pool-start "$POOL" >/dev/null
fi

# ------------------------------------------------------------ cache key
# One snapshot of the tree for the whole build: the work tree may change
# while the box is being made (the key, the wheels and the venv must agree).
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
SRC="$CACHE/src"
rsync -a --delete --exclude .git/ --exclude __pycache__/ --exclude '*.egg-info/' \
  --exclude .vagrant/ --exclude tests/artifacts/ --exclude .pytest_cache/ "$REPO/" "$SRC/"
inputs=("$SRC/vagrant/box/build.sh" "$SRC/vagrant/provision.sh" "$SRC/pyproject.toml"
        "$SRC/vagrant/workloads/build-vm-image.sh"
        "$SRC/vagrant/workloads/build-container-image.sh")
KEY=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
box_added() { vagrant box list 2>/dev/null | grep -q "^$BOX .*libvirt"; }
if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$CACHE/added.key" 2>/dev/null)" = "$KEY" ] && box_added; then
  say "cached: $BOX (inputs $KEY)"
  exit 0
fi
BOXFILE="$CACHE/mecorch-debian12-$KEY.box"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$BOXFILE" ]; then
  started=$SECONDS
  TMP=$(mktemp -d /var/tmp/mecorch-box.XXXXXX)
  RAW="$TMP/disk.raw"
  MNT="$TMP/root"
  LOOP=""
  cleanup() {
    local rc=$?
    set +e
    for m in dev/pts dev proc sys var/cache/apt/archives tmp/wheels; do
      mountpoint -q "$MNT/$m" 2>/dev/null && umount -l "$MNT/$m"
    done
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
    rm -rf "$TMP"
    exit "$rc"
  }
  trap cleanup EXIT

  # Wheels for the venv, made with this host's pip (its index settings);
  # libvirt-python is built here once (or taken from pip's wheel cache).
  say "making wheels for mecorch[test]"
  mkdir -p "$CACHE/wheels"
  "$HOST_VENV/bin/pip" wheel -q -w "$CACHE/wheels" pip "setuptools>=77" wheel "${SRC}[test]" \
    > "$CACHE/pip-wheel.log" 2>&1 || { tail -20 "$CACHE/pip-wheel.log"; die "pip wheel failed"; }
  rm -f "$CACHE"/wheels/mecorch-*.whl

  say "disk: ${DISK_GB} GB raw, one ext4 partition"
  truncate -s "${DISK_GB}G" "$RAW"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
  read -r PSTART PSIZE < <(sfdisk --dump "$RAW" |
      awk -F'[=,]' '/start=/ { gsub(/ /, ""); print $2, $4; exit }')
  LOOP=$(losetup --find --show --offset $((PSTART * 512)) --sizelimit $((PSIZE * 512)) "$RAW")
  # no 64bit/metadata_csum: syslinux's ext4 reader has nothing unusual to read
  mkfs.ext4 -q -F -L mecorch-root -O ^64bit,^metadata_csum "$LOOP"
  UUID=$(blkid -s UUID -o value "$LOOP")
  mkdir -p "$MNT"
  mount "$LOOP" "$MNT"

  say "debootstrap $SUITE (minbase)"
  mkdir -p "$CACHE/debs"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$MNT" "$MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }

  # The chroot gets a /dev of its own, never the workstation's: package
  # scripts chgrp device nodes by the chroot's group ids (its "kvm" is
  # another gid than the workstation's), and /sys is read-only.
  mount -t proc proc "$MNT/proc"
  mount -t sysfs -o ro sys "$MNT/sys"
  mount -t tmpfs -o mode=755,size=1m boxdev "$MNT/dev"
  mknod -m 666 "$MNT/dev/null" c 1 3
  mknod -m 666 "$MNT/dev/zero" c 1 5
  mknod -m 666 "$MNT/dev/full" c 1 7
  mknod -m 666 "$MNT/dev/random" c 1 8
  mknod -m 666 "$MNT/dev/urandom" c 1 9
  mknod -m 666 "$MNT/dev/tty" c 5 0
  mkdir -m 755 "$MNT/dev/pts"
  mkdir -m 1777 "$MNT/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$MNT/dev/pts"
  ln -s pts/ptmx "$MNT/dev/ptmx"
  mkdir -p "$CACHE/apt-archives/partial" "$MNT/tmp/wheels"
  mount --bind "$CACHE/apt-archives" "$MNT/var/cache/apt/archives"
  mount --bind "$CACHE/wheels" "$MNT/tmp/wheels"
  in_root() { chroot "$MNT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

  # The same sources as the workstation (Debian's archives only).
  rm -f "$MNT/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$MNT/etc/apt/sources.list.d/"
  for f in /etc/apt/apt.conf.d/99*; do [ -f "$f" ] && cp "$f" "$MNT/etc/apt/apt.conf.d/"; done
  rm -f "$MNT/etc/apt/apt.conf.d/docker-clean"     # keep .debs in the bind-mounted cache
  # No daemon starts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$MNT/usr/sbin/policy-rc.d"
  chmod 755 "$MNT/usr/sbin/policy-rc.d"

  # provision.sh's package list, plus what a booting Vagrant guest needs.
  mapfile -t prov_pkgs < <(sed -n '/^PACKAGES=(/,/^)/p' "$SRC/vagrant/provision.sh" |
      sed 's/#.*//; s/PACKAGES=(//; s/)//' | tr ' ' '\n' | sed '/^$/d')
  [ ${#prov_pkgs[@]} -gt 10 ] || die "could not read PACKAGES from vagrant/provision.sh"
  box_pkgs=(linux-image-cloud-amd64 initramfs-tools systemd-sysv udev dbus
            openssh-server sudo rsync apparmor ca-certificates procps less)
  say "apt: ${#prov_pkgs[@]} packages of provision.sh + ${#box_pkgs[@]} for the box"
  in_root apt-get update -q >/dev/null
  in_root apt-get install -y -q --no-install-recommends "${prov_pkgs[@]}" "${box_pkgs[@]}" \
    > "$CACHE/apt.log" 2>&1 || { tail -30 "$CACHE/apt.log"; die "apt-get install in the box failed"; }

  say "system configuration"
  echo mecorch-box > "$MNT/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 mecorch-box\n' > "$MNT/etc/hosts"
  echo "UUID=$UUID / ext4 errors=remount-ro 0 1" > "$MNT/etc/fstab"
  : > "$MNT/etc/machine-id"
  rm -f "$MNT/var/lib/dbus/machine-id"
  cat > "$MNT/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0
[Network]
DHCP=ipv4
EOF
  in_root systemctl enable systemd-networkd >/dev/null 2>&1
  # wait-online waits for every link, eth1 included (the Vagrantfile
  # addresses it later): minutes of boot for nothing.
  in_root systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
  # mecorch runs its own registry on 127.0.0.1:5000 (provision.sh).
  in_root systemctl disable docker-registry.service >/dev/null 2>&1 || true
  for t in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
           fstrim.timer dpkg-db-backup.timer; do
    in_root systemctl disable "$t" >/dev/null 2>&1 || true
  done
  # Each guest gets its own SSH host keys at first boot.
  rm -f "$MNT"/etc/ssh/ssh_host_*
  mkdir -p "$MNT/etc/systemd/system/ssh.service.d"
  # (before the unit's own "sshd -t", which fails without host keys)
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > "$MNT/etc/systemd/system/ssh.service.d/hostkeys.conf"
  in_root useradd -m -s /bin/bash -G sudo vagrant
  install -d -m 700 "$MNT/home/vagrant/.ssh"
  install -m 600 "$INSECURE_KEY" "$MNT/home/vagrant/.ssh/authorized_keys"
  in_root chown -R vagrant:vagrant /home/vagrant/.ssh
  echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$MNT/etc/sudoers.d/vagrant"
  chmod 440 "$MNT/etc/sudoers.d/vagrant"

  say "mecorch virtualenv (from the wheels, no index)"
  mkdir -p "$MNT/opt/mecorch/src"
  rsync -a "$SRC/" "$MNT/opt/mecorch/src/"
  in_root /usr/bin/python3 -m venv /opt/mecorch/venv
  in_root /opt/mecorch/venv/bin/pip install -q --no-index --find-links /tmp/wheels \
    --upgrade pip "setuptools>=77" wheel
  in_root /opt/mecorch/venv/bin/pip install -q --no-index --find-links /tmp/wheels \
    -e "/opt/mecorch/src[test]"
  in_root /opt/mecorch/venv/bin/python -c "import libvirt, docker, yaml, mecorch"
  # provision.sh's stamp: the same pyproject.toml and tree path -> no reinstall
  echo "$(sha256sum "$SRC/pyproject.toml" | cut -d' ' -f1):/opt/mecorch/src" \
    > "$MNT/opt/mecorch/venv/.mecorch-installed"
  ln -sf /opt/mecorch/venv/bin/mecorch "$MNT/usr/local/bin/mecorch"

  say "sample VM image"
  W="$MNT/var/cache/mecorch/workloads"
  mkdir -p "$W"
  if [ -d /var/cache/mecorch/workloads/cache ]; then
    cp -a /var/cache/mecorch/workloads/cache "$W/"
  fi
  bash "$SRC/vagrant/workloads/build-vm-image.sh" "$W" > "$CACHE/vm-image.log" 2>&1 ||
    { tail -20 "$CACHE/vm-image.log"; die "sample VM image build failed"; }
  rm -rf "$W/cache"

  say "boot loader"
  KVER=$(find "$MNT/lib/modules" -mindepth 1 -maxdepth 1 -name '*-cloud-amd64' -printf '%f\n' | head -n1)
  [ -n "$KVER" ] || die "no cloud kernel in the box"
  [ -f "$MNT/boot/initrd.img-$KVER" ] || in_root update-initramfs -c -k "$KVER" >/dev/null
  mkdir -p "$MNT/boot/extlinux"
  cat > "$MNT/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
PROMPT 0
TIMEOUT 1
DEFAULT debian
LABEL debian
  KERNEL /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND root=UUID=$UUID ro console=ttyS0,115200 net.ifnames=0 biosdevname=0 quiet
EOF
  extlinux --install "$MNT/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"

  rm -f "$MNT/usr/sbin/policy-rc.d"
  rm -rf "$MNT"/tmp/* 2>/dev/null || true
  for m in tmp/wheels var/cache/apt/archives dev/pts dev proc sys; do umount "$MNT/$m"; done
  # Read-only before the umount: a process that made a mount namespace
  # while the disk was mounted keeps a copy of the mount, and umount here
  # then leaves the file system live, its journal unrecovered, in the image
  # (guests found it corrupt). The remount writes it out clean in every
  # namespace; the image is checked before it is packed.
  mount -o remount,ro "$MNT"
  umount "$MNT"
  blockdev --flushbufs "$LOOP"
  if dumpe2fs -h "$LOOP" 2>/dev/null | grep -q needs_recovery || ! e2fsck -fn "$LOOP" >/dev/null 2>&1; then
    die "the box's file system is not clean after its umount (e2fsck -fn $LOOP)"
  fi
  losetup -d "$LOOP"
  LOOP=""
  dd if=/usr/lib/EXTLINUX/mbr.bin of="$RAW" bs=440 count=1 conv=notrunc status=none

  say "qcow2 + box"
  qemu-img convert -q -f raw -O qcow2 "$RAW" "$TMP/box.img"
  rm -f "$RAW"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$DISK_GB" \
    > "$TMP/metadata.json"
  cat > "$TMP/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
  tar -C "$TMP" -cf "$BOXFILE.part" metadata.json Vagrantfile box.img
  mv "$BOXFILE.part" "$BOXFILE"
  rm -f "$CACHE"/mecorch-debian12-*.box.old
  for old in "$CACHE"/mecorch-debian12-*.box; do
    [ "$old" = "$BOXFILE" ] || rm -f "$old"
  done
  say "built $BOXFILE ($(du -h "$BOXFILE" | cut -f1)) in $((SECONDS - started)) s"
fi

# A rebuilt box replaces the old one, and the old image vagrant-libvirt
# uploaded into the pool (it reuses a volume of the same name).
if box_added; then
  vagrant box remove -f --all "$BOX" >/dev/null
fi
boxvol=$(printf '%s' "$BOX" | sed 's#/#-VAGRANTSLASH-#')
for vol in $(virsh_ vol-list "$POOL" 2>/dev/null | awk '{print $1}' | grep "^${boxvol}_vagrant_box_image" || true); do
  virsh_ vol-delete "$vol" --pool "$POOL" >/dev/null
done
vagrant box add -f --name "$BOX" "$BOXFILE" >/dev/null
echo "$KEY" > "$CACHE/added.key"
say "added box $BOX (inputs $KEY)"
