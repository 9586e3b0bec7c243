#!/usr/bin/env bash
# "Try it without a cloud": on a fresh Debian 12 machine, as root, stand up the local
# OpenStack control plane and the namespace hosts, then run sparkstack against them as a
# user would against a real cloud: up (servers, SSH, JupyterHub; it prints the hub's URL),
# status, the Spark workers registered, smoke (a PySpark job through the hub), and down
# (unless KEEP=1). Every step prints how long it took. STOCK=1 does it on a stock image;
# BAKE=1 first bakes an image from the stock one (`sparkstack image build`), then runs the
# demo on it and prints the time from `up` starting to the first PySpark cell's answer.
# HEAT=1 makes the cluster as a Horizon user of the Orchestration panel would: `render
# --heat`, a stack of that template (only the key pair filled in) on the bed's Heat, the
# stack's hub_command output, smoke, and `sparkstack down`, which deletes the stack.
set -euo pipefail
cd "$(dirname "$0")/../.."

# STOCK=1: the bed's stock Debian 12 image, installing everything at boot through the
# bed's mirrors (as a new user's first `up` on a cloud without internet).
baked_image=sparkstack-demo-baked
if [ "${BAKE:-0}" = 1 ]; then
    # The stock inventory with cluster.image set to the image the demo bakes.
    inventory=$(mktemp --suffix=.toml)
    trap 'rm -f "$inventory"' EXIT
    sed -e "s/^image = .*/image = \"$baked_image\"/" tests/testbed/inventory.stock.toml >"$inventory"
elif [ "${STOCK:-0}" = 1 ]; then
    inventory=tests/testbed/inventory.stock.toml
else
    inventory=tests/testbed/inventory.testbed.toml
fi
export OS_CLIENT_CONFIG_FILE=${SPARKSTACK_TESTBED_DIR:-/var/lib/sparkstack-testbed}/clouds.yaml
export DEBIAN_FRONTEND=noninteractive

step() {
    local name=$1; shift
    local t0=$SECONDS
    echo "==> $name"
    "$@"
    echo "==> $name: $((SECONDS - t0)) s"
}

install() {
    apt-get -o DPkg::Lock::Timeout=900 -y -q update
    apt-get -o DPkg::Lock::Timeout=900 -y -q install --no-install-recommends \
        debootstrap iproute2 curl ca-certificates
    python3 -m pip install -q -e .
}

# The master's Spark UI listens on its private address, which this machine reaches over
# the test bed's bridge; it lists the workers that registered.
wait_for_workers() {
    local want master_ip deadline alive
    want=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["workers"]["count"])' "$inventory")
    master_ip=$(sparkstack status -i "$inventory" --json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
print(next(n["fixed_ip"] for n in nodes if n["role"] == "master"))')
    deadline=$((SECONDS + 900))
    while :; do
        alive=$(curl -fsS --max-time 5 "http://$master_ip:8080/json/" 2>/dev/null | python3 -c '
import json, sys
print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null || echo 0)
        echo "    spark master at $master_ip: $alive of $want workers ALIVE"
        [ "$alive" -ge "$want" ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || { echo "workers did not register in time" >&2; return 1; }
        sleep 5
    done
}

step "install sparkstack and the bed's tools" install
step "OpenStack control plane" bash tests/testbed/controlplane/up.sh
step "node images, mirrors, hypervisor" bash tests/testbed/hosts/up.sh
# Glance's copy of the image, by the SDK (the bed installs no openstack CLI).
delete_baked() {
    python3 -c 'import sys, openstack
conn = openstack.connect(cloud="sparkstack-test")
for image in conn.image.images(name=sys.argv[1]):
    conn.image.delete_image(image.id)
    print("deleted image", image.name, image.id)' "$baked_image"
}

if [ "${BAKE:-0}" = 1 ]; then
    delete_baked  # a baked image of an earlier demo: bake it again from this checkout
    step "sparkstack image build (from debian-12-stock)" sparkstack image build \
        -i "$inventory" --from debian-12-stock --name "$baked_image"
    step "sparkstack image list" sparkstack image list -i "$inventory"
fi
if [ "${HEAT:-0}" = 1 ]; then
    # A key pair of the user's own and an inventory naming it, in a directory of their
    # own: hub_command says `-i inventory.toml`, run from there.
    work=$(mktemp -d)
    [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
    ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
    sed -e "s|^\[ssh\]$|[ssh]\nkeypair = \"demo-heat\"\nprivate_key = \"$work/id_ed25519\"|" \
        "$inventory" >"$work/inventory.toml"
    # shellcheck disable=SC2317 # called through step
    keypair() {
        python3 -c 'import sys, openstack
conn = openstack.connect(cloud="sparkstack-test")
conn.compute.delete_keypair("demo-heat", ignore_missing=True)
if sys.argv[1] == "create":
    conn.compute.create_keypair(name="demo-heat", public_key=open(sys.argv[2]).read())' "$@"
    }
    step "import the key pair demo-heat" keypair create "$work/id_ed25519.pub"
    step "sparkstack render --heat" sparkstack render --heat -i "$work/inventory.toml" \
        -o "$work/cluster.yaml"
    up_started=$SECONDS
    step "stack create (Heat)" bash -c \
        "python3 -m tests.testbed.stack create '$work/cluster.yaml' demo demo-heat >'$work/hub_command'"
    echo "    hub_command: $(cat "$work/hub_command")"
    step "the stack's hub_command" bash -c "cd '$work' && $(cat "$work/hub_command")"
    step "sparkstack status" sparkstack status -i "$work/inventory.toml"
    step "sparkstack smoke" sparkstack smoke -i "$work/inventory.toml"
    echo "==> from the stack's creation to the first PySpark cell's answer (smoke): $((SECONDS - up_started)) s"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "Stack kept. Remove it with: OS_CLIENT_CONFIG_FILE=$OS_CLIENT_CONFIG_FILE sparkstack down -i $work/inventory.toml --yes"
        exit 0
    fi
    step "sparkstack down (deletes the stack)" sparkstack down -i "$work/inventory.toml" --yes
    step "delete the key pair demo-heat" keypair delete
    step "stop the beds" bash -c 'bash tests/testbed/hosts/down.sh && bash tests/testbed/controlplane/down.sh'
    exit 0
fi
up_started=$SECONDS
step "sparkstack up" sparkstack up -i "$inventory"
step "sparkstack status" sparkstack status -i "$inventory"
step "Spark workers register" wait_for_workers
step "sparkstack smoke" sparkstack smoke -i "$inventory"
echo "==> from up starting to the first PySpark cell's answer (smoke): $((SECONDS - up_started)) s"
if [ "${KEEP:-0}" = 1 ]; then
    echo "Cluster kept. Remove it with: OS_CLIENT_CONFIG_FILE=$OS_CLIENT_CONFIG_FILE sparkstack down -i $inventory --yes"
    echo "Stop the beds with: bash tests/testbed/hosts/down.sh && bash tests/testbed/controlplane/down.sh"
else
    step "sparkstack down" sparkstack down -i "$inventory" --yes
    if [ "${BAKE:-0}" = 1 ]; then step "delete the baked image" delete_baked; fi
    step "stop the beds" bash -c 'bash tests/testbed/hosts/down.sh && bash tests/testbed/controlplane/down.sh'
fi
