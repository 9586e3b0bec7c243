#!/bin/sh
# Builds a root file system like Debian's "genericcloud" image in TARGET: debootstrap
# minbase + cloud-init, sshd, sudo, python3, curl and little else. Nothing a sparkstack
# node needs beyond that (no Java, venv, pip, Node, npm, /opt/sparkstack): nodes booted
# from it must install those at boot, through the bed's mirrors, as on a stock image.
#
# usage: build-stock-rootfs.sh TARGET SUITE     (SUITE: bookworm, trixie)
# The Debian archive is $SPARKSTACK_DEBIAN_MIRROR, else the first one this machine's apt
# uses (so no mirror host is written down here); the security archive likewise, if any.
set -eu

target=${1:?usage: build-stock-rootfs.sh TARGET SUITE}
suite=${2:?usage: build-stock-rootfs.sh TARGET SUITE}

apt_uris() {
    # deb822 sources first (Debian 12 default), then one-line sources.list entries.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
    done
}
mirror=${SPARKSTACK_DEBIAN_MIRROR:-$(apt_uris | grep -v security | grep /debian | head -n 1)}
security=$(apt_uris | grep security | head -n 1)
[ -n "$mirror" ] || { echo "no Debian mirror found; set SPARKSTACK_DEBIAN_MIRROR" >&2; exit 2; }

# Build next to the target and rename at the end: a half-built tree is never used.
work="$target.partial"
rm -rf "$work"
mkdir -p "$(dirname "$target")"
debootstrap --variant=minbase "$suite" "$work" "$mirror"

cleanup() {
    umount "$work/proc" 2>/dev/null || true
    rm -f "$work/usr/sbin/policy-rc.d"
}
trap cleanup EXIT
mount -t proc proc "$work/proc"
# Package scripts must not start daemons on the build machine.
printf '#!/bin/sh\nexit 101\n' > "$work/usr/sbin/policy-rc.d"
chmod +x "$work/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$work/etc/resolv.conf"

# What a cloud image's apt knows: the archive, its -updates and the security archive.
{
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    if [ -n "$security" ]; then
        echo "deb $security $suite-security main"
    fi
} > "$work/etc/apt/sources.list"

mkdir -p "$work/etc/cloud/cloud.cfg.d"
# /etc/hosts managed by cloud-init, as Debian's cloud images configure it (else sudo
# cannot resolve the node's own name).
printf 'manage_etc_hosts: true\n' > "$work/etc/cloud/cloud.cfg.d/01_debian_cloud.cfg"

# python3-cffi-backend: cloud-init needs it through a virtual package that debootstrap
# does not resolve. systemctl: Debian's daemonless systemctl, ONLY because namespace hosts
# have no systemd as PID 1; a real cloud image has systemd, and this package conflicts
# with it. It lets the same cloud-config (systemctl enable --now ...) run unchanged.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive chroot "$work" sh -eu -c '
        apt-get update
        apt-get install -y --no-install-recommends cloud-init python3-cffi-backend \
            openssh-server sudo python3 curl ca-certificates iproute2 procps netbase \
            locales systemctl
        apt-get clean
    '

# pam_loginuid fails where there is no audit subsystem (namespaces) and would then refuse
# every SSH login; a missing loginuid costs nothing on a node.
for f in "$work"/etc/pam.d/*; do
    sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' "$f"
done
# en_US.UTF-8 generated: cloud-init's locale module sets it, as on Debian's images.
sed -i -E 's/^# *(en_US\.UTF-8 UTF-8)/\1/' "$work/etc/locale.gen"
chroot "$work" locale-gen

# A real image ships without package lists: a node must run apt-get update itself.
rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin
: > "$work/etc/resolv.conf"

cleanup
trap - EXIT
rm -rf "$target"
mv "$work" "$target"
echo "stock rootfs ready: $target"
