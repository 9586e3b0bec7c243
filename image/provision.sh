#!/bin/sh
# Installs everything a sparkstack node needs, so cloud-init only configures and starts.
#
# One recipe for two uses:
#   * a pre-baked cloud image: run as root on a Debian 12 VM (or with virt-customize
#     --run), then snapshot it;
#   * the test bed's rootfs: build-rootfs.sh runs it inside a debootstrap chroot with
#     --no-systemd.
# Package lists live beside this script (packages*.txt; requirements.txt, locked from
# requirements.in by ./lock-requirements; npm/package-lock.json); change them there, never
# here. Everything from PyPI and npm is installed at exact versions and checked against the
# hashes those files hold.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
venv=/opt/sparkstack/venv
npm_dir=/opt/sparkstack/npm
no_systemd=0
for arg in "$@"; do
    case "$arg" in
        --no-systemd) no_systemd=1 ;;
        *) echo "usage: $0 [--no-systemd]" >&2; exit 2 ;;
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

# The venv lives outside /root: hub users' kernels and servers must be able to read it.
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Into the venv only, never the system Python; the venv's own pip (the distribution's) is
# kept: upgrading it would be one more unpinned download.
"$venv/bin/pip" install --no-cache-dir --no-input --require-hashes --only-binary=:all: \
    -r "$here/requirements.txt"
# Kept in the image: a master's boot installs from it again (a no-op when nothing changed).
install -m 0644 "$here/requirements.txt" /opt/sparkstack/requirements.txt

# configurable-http-proxy and its dependencies exactly as package-lock.json says (npm ci
# checks each tarball's integrity hash), without running any package's install scripts.
mkdir -p "$npm_dir"
cp "$here/npm/package.json" "$here/npm/package-lock.json" "$npm_dir/"
(cd "$npm_dir" && npm ci --omit=dev --ignore-scripts --no-fund --no-audit)
ln -sf "$npm_dir/node_modules/.bin/configurable-http-proxy" /usr/local/bin/configurable-http-proxy

# pam_loginuid fails where there is no audit subsystem (containers, namespaces) and
# would then refuse every SSH login; a missing loginuid costs nothing on a node.
for f in /etc/pam.d/*; do
    sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' "$f"
done

apt-get clean
rm -rf /var/lib/apt/lists/* /root/.npm /root/.cache
