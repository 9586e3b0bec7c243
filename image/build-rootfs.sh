#!/bin/sh
# Builds a Debian bookworm root file system for sparkstack nodes in TARGET:
# debootstrap (minbase) + provision.sh in a chroot, with the node boot script's files from
# TREE (`sparkstack render --role image -i INVENTORY --tree TREE`). The test bed boots its
# namespace hosts from it; it is also a starting point for a container or disk image.
#
# usage: build-rootfs.sh TARGET TREE [MIRROR]
# MIRROR defaults to $SPARKSTACK_DEBIAN_MIRROR, else the first Debian archive that
# apt on this machine uses (so no mirror host is written down here).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: build-rootfs.sh TARGET TREE [MIRROR]}
tree=${2:?usage: build-rootfs.sh TARGET TREE [MIRROR]}
mirror=${3:-${SPARKSTACK_DEBIAN_MIRROR:-}}

apt_mirror() {
    # deb822 sources first (Debian 12 default), then one-line sources.list entries;
    # skip the security archive, which has no bookworm suite of its own.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
    done
}
if [ -z "$mirror" ]; then
    mirror=$(apt_mirror | grep -v security | head -n 1)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found; pass one or set SPARKSTACK_DEBIAN_MIRROR" >&2; exit 2; }

# Build next to the target and rename at the end: a half-built tree is never used.
work="$target.partial"
rm -rf "$work"
mkdir -p "$(dirname "$target")"
debootstrap --variant=minbase bookworm "$work" "$mirror"

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

# Make the chroot look like Debian's cloud images, which this tree stands in for:
# en_US.UTF-8 generated (cloud-init's locale module sets it) and /etc/hosts managed by
# cloud-init (else sudo cannot resolve the node's own name).
mkdir -p "$work/etc/cloud/cloud.cfg.d"
printf 'manage_etc_hosts: true\n' > "$work/etc/cloud/cloud.cfg.d/01_debian_cloud.cfg"

mkdir -p "$work/tmp/sparkstack-image"
cp -r "$here"/provision.sh "$here"/*.txt "$work/tmp/sparkstack-image/"
cp -R "$tree" "$work/tmp/sparkstack-image/tree"
# pip and npm inside the chroot trust what this machine trusts (a TLS-inspecting proxy's
# CA, for one), for the build only: the bundle is not left in the image.
ca_env=""
ca=${SPARKSTACK_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$ca" ]; then
    cp "$ca" "$work/tmp/sparkstack-image/build-ca.crt"
    b=/tmp/sparkstack-image/build-ca.crt
    ca_env="PIP_CERT=$b NPM_CONFIG_CAFILE=$b NODE_EXTRA_CA_CERTS=$b"
fi
# shellcheck disable=SC2086 # ca_env is a list of assignments
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 $ca_env \
    chroot "$work" /bin/sh /tmp/sparkstack-image/provision.sh /tmp/sparkstack-image/tree --no-systemd
rm -rf "$work/tmp/sparkstack-image"
sed -i -E 's/^# *(en_US\.UTF-8 UTF-8)/\1/' "$work/etc/locale.gen"
chroot "$work" locale-gen
: > "$work/etc/resolv.conf"

cleanup
trap - EXIT
rm -rf "$target"
mv "$work" "$target"
echo "rootfs ready: $target"
