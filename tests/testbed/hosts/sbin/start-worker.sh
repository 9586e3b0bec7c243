#!/usr/bin/env bash
# Starts one standalone Spark worker as a daemon: `start-worker.sh spark://HOST:7077 [args]`.
# Written for distributions built from the pyspark package, which lack this launcher.
if [ $# -lt 1 ]; then
    echo "usage: $0 <master-url> [worker options]" >&2
    exit 1
fi
SPARK_HOME="${SPARK_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
export SPARK_HOME
. "$SPARK_HOME/sbin/spark-config.sh"
. "$SPARK_HOME/bin/load-spark-env.sh"

master="$1"
shift
port_args=()
if [ -n "${SPARK_WORKER_PORT:-}" ]; then
    port_args=(--port "$SPARK_WORKER_PORT")
fi
exec "$SPARK_HOME/sbin/spark-daemon.sh" start org.apache.spark.deploy.worker.Worker 1 \
    --webui-port "${SPARK_WORKER_WEBUI_PORT:-8081}" "${port_args[@]}" "$master" "$@"
