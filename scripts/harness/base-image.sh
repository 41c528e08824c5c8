#!/usr/bin/env bash
# Build the systemd-capable Debian 12 base image locally (no registry here):
# debootstrap a minbase rootfs and `docker import` it. Reused when it exists.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

image="${1:-$DHOPS_BASE_IMAGE}"
suite="${2:-${DHOPS_BASE_SUITE:-bookworm}}"

# What roles and tests need on a target, baked in so converges need no network.
# debootstrap resolves --include dependencies poorly, so it gets only the core and apt
# installs the rest inside the rootfs. python3-packaging: ansible.builtin.pip imports it.
core=systemd,systemd-sysv,dbus,python3,ca-certificates
packages=(python3-venv python3-packaging python3-apt python3-cryptography curl iproute2 procps logrotate openssl sudo less)

# An image built from an older package list is rebuilt (the tag moves; running containers keep theirs).
if docker image inspect "$image" >/dev/null 2>&1; then
  if docker run --rm --network none --entrypoint dpkg-query "$image" -W "${packages[@]}" >/dev/null 2>&1; then
    log "base image $image present, reused"
    exit 0
  fi
  log "base image $image lacks some of: ${packages[*]}; rebuilding it"
fi
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
mirror="${DHOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d /var/tmp/dhops-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT  # the log beside it is kept on failure
start=$(date +%s)
log "debootstrap $suite into $rootfs (takes about 80 s)"
debootstrap --variant=minbase --include="$core" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
printf 'deb %s %s main\n' "$mirror" "$suite" >"$rootfs/etc/apt/sources.list"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" apt-get update >>"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; die "apt-get update in the rootfs failed (log: $rootfs.log)"; }
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${packages[@]}" >>"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; die "apt-get in the rootfs failed (log: $rootfs.log)"; }
rm -f "$rootfs.log" "$rootfs/etc/resolv.conf"

# Units that make no sense or hang inside a container.
for unit in systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
            sys-kernel-config.mount sys-kernel-debug.mount getty.target console-getty.service \
            systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# The registries are reached through a TLS proxy; its CA must be trusted inside too.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
echo "dhops-base" >"$rootfs/etc/hostname"

tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' \
  - "$image" >/dev/null
log "built $image in $(( $(date +%s) - start )) s"
