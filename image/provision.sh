#!/bin/sh
# Installs everything a sparkstack node needs on this machine (as root), so a node's boot
# only configures and starts. Not a recipe of its own: it runs the install steps of the node
# boot script (templates/cloud-init/_bootstrap.sh.j2, the same steps a stock node's boot and
# `sparkstack image build`'s builder run) from the files sparkstack renders for an image:
#
#   sparkstack render --role image -i inventory.toml --tree TREE
#   sh image/provision.sh TREE [--no-systemd] [--with-spark]
#
# Used for the test bed's node tree (image/build-rootfs.sh runs it in a debootstrap chroot,
# with --no-systemd and without Spark, which the bed's nodes fetch from its mirror), and by
# hand on a VM one snapshots oneself (`sparkstack image build` does all of that for you).
# packages.txt lists what a stock cloud image has and the boot script does not install
# (cloud-init, sshd, sudo); the rest comes from the locks, at exact versions and hashes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 TREE [--no-systemd] [--with-spark]" >&2; exit 2; }
[ $# -ge 1 ] || usage
tree=$1
shift
[ -x "$tree/usr/local/sbin/sparkstack-bootstrap" ] || {
    echo "$tree has no usr/local/sbin/sparkstack-bootstrap: render it with" \
        "sparkstack render --role image --tree $tree" >&2
    exit 2
}
no_systemd=0
# Not mirrors (the image keeps its own apt sources) nor harden (its firewall rule would
# land in the machine running a chroot build): the nodes' own boots do both.
steps="base user java proxy python"
for arg in "$@"; do
    case "$arg" in
        --no-systemd) no_systemd=1 ;;
        --with-spark) steps="$steps spark" ;;
        *) usage ;;
    esac
done

# Strip comments and blank lines from a list file.
list() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1"; }

export DEBIAN_FRONTEND=noninteractive
pkgs=$(list "$here/packages.txt")
if [ "$no_systemd" = 1 ]; then
    pkgs="$pkgs $(list "$here/packages-nosystemd.txt")"
fi
apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y --no-install-recommends $pkgs

cp -R "$tree"/. /
# shellcheck disable=SC2086 # one word per step
/usr/local/sbin/sparkstack-bootstrap $steps
# What the run leaves that belongs to each node's own boot (its settings, its markers).
rm -rf /var/lib/sparkstack /etc/sparkstack/sparkstack.conf /etc/apt/apt.conf.d/80sparkstack

# pam_loginuid fails where there is no audit subsystem (containers, namespaces) and
# would then refuse every SSH login; a missing loginuid costs nothing on a node.
for f in /etc/pam.d/*; do
    sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' "$f"
done

apt-get clean
rm -rf /var/lib/apt/lists/* /root/.npm /root/.cache
