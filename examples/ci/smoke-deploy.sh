#!/usr/bin/env bash
# Smoke-deploy a sparkstack cluster from CI: up, smoke, and ALWAYS down.
#
#   examples/ci/smoke-deploy.sh            # up -> smoke --json -> down --yes --no-backup
#   examples/ci/smoke-deploy.sh cleanup    # down only (a CI "always" step)
#
# Prints no secret: no password (the hub users' stay in the credentials file, which down
# deletes with the cluster), token or key.
#
# The exit status is smoke's (or up's, when up failed; 128+N when the job was cancelled
# with signal N); a failing down turns an otherwise green run red, since it may have left
# resources behind.
#
# Environment:
#   SPARKSTACK_INVENTORY     inventory file (default inventory.toml)
#   SPARKSTACK_CLUSTER_NAME  replaces cluster.name; default: derived from the CI run, so
#                            concurrent pipelines never share a cluster
#   SPARKSTACK_CLOUDS_YAML   the text of a clouds.yaml (e.g. with application credentials)
#                            taken from a CI secret; without it the OS_* variables (or
#                            OS_CLIENT_CONFIG_FILE / OS_CLOUD) are used as they are
#   SMOKE_REPORT             where smoke's JSON report goes (default smoke-report.json)
#   SPARKSTACK               the sparkstack command (default: sparkstack)
set -uo pipefail

mode=${1:-run}
inventory=${SPARKSTACK_INVENTORY:-inventory.toml}
report=${SMOKE_REPORT:-smoke-report.json}
read -r -a sparkstack <<<"${SPARKSTACK:-sparkstack}"

log() { printf '[smoke-deploy %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cluster_name() {
    local raw
    if [ -n "${SPARKSTACK_CLUSTER_NAME:-}" ]; then
        raw=$SPARKSTACK_CLUSTER_NAME
    elif [ -n "${GITHUB_RUN_ID:-}" ]; then
        raw="ci-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT:-1}"
    elif [ -n "${CI_PIPELINE_ID:-}" ]; then
        raw="ci-${CI_PIPELINE_ID}-${CI_JOB_ID:-0}"
    else
        raw="ci-$(date +%s)-$$"
    fi
    # cluster.name: lowercase letters, digits and '-', at most 40, starting with a letter
    raw=$(printf '%s' "$raw" | tr '[:upper:]' '[:lower:]' | tr '_.' '--' | tr -cd 'a-z0-9-')
    raw=${raw:0:40}
    printf '%s' "${raw%-}"
}

export SPARKSTACK_CLUSTER_NAME
SPARKSTACK_CLUSTER_NAME=$(cluster_name)

secrets_dir=""
if [ -n "${SPARKSTACK_CLOUDS_YAML:-}" ]; then
    secrets_dir=$(mktemp -d)
    (umask 077 && printf '%s\n' "$SPARKSTACK_CLOUDS_YAML" >"$secrets_dir/clouds.yaml")
    export OS_CLIENT_CONFIG_FILE="$secrets_dir/clouds.yaml"
fi

# Every step runs in the background and is waited for, so a signal to this script is
# handled at once (bash defers traps while a foreground child runs). sparkstack treats
# SIGTERM like Ctrl-C; SIGINT would not reach a background child of a script at all.
child=0
stopped=0
# shellcheck disable=SC2317  # invoked by the traps below
on_signal() {
    local signum=$1
    [ "$stopped" -eq 0 ] && stopped=$signum
    if [ "$child" -ne 0 ] && [ "$cleaning" -eq 0 ]; then
        kill -TERM "$child" 2>/dev/null || true
    fi
}
cleaning=0
trap 'on_signal 15' TERM
trap 'on_signal 2' INT
trap 'on_signal 1' HUP

step() {
    "$@" &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    # A trapped signal ends `wait` early; wait again for the step to really finish.
    while kill -0 "$child" 2>/dev/null; do
        rc=0
        wait "$child" || rc=$?
    done
    child=0
    return "$rc"
}

cleanup() {
    cleaning=1
    log "down: removing cluster $SPARKSTACK_CLUSTER_NAME"
    local rc=0
    # --no-backup: a smoke cluster holds nobody's work, and a master that never came up
    # must not keep the cleanup from deleting it (down refuses to delete a master it could
    # not back up); an archive would also be left on the runner.
    step "${sparkstack[@]}" down -i "$inventory" --yes --no-backup || rc=$?
    [ -n "$secrets_dir" ] && rm -rf "$secrets_dir"
    return "$rc"
}

if [ "$mode" = cleanup ]; then
    cleanup
    exit $?
fi
if [ "$mode" != run ]; then
    echo "usage: $0 [run|cleanup]" >&2
    exit 2
fi

result=0
log "up: cluster $SPARKSTACK_CLUSTER_NAME from $inventory"
# up prints the admin's initial password when its stdout is a terminal, and some runners
# give jobs one (Buildkite's agent does by default): a pipe keeps it out of the job's log.
step "${sparkstack[@]}" up -i "$inventory" > >(cat) || result=$?
if [ "$result" -eq 0 ] && [ "$stopped" -eq 0 ]; then
    log "smoke: report in $report"
    step "${sparkstack[@]}" smoke -i "$inventory" --json >"$report" || result=$?
fi
down_rc=0
cleanup || down_rc=$?
if [ "$stopped" -ne 0 ]; then
    result=$((128 + stopped))
elif [ "$result" -eq 0 ]; then
    result=$down_rc
fi
log "done: exit $result (down exit $down_rc)"
exit "$result"
