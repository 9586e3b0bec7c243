#!/usr/bin/env bash
# Starts a standalone Spark master as a daemon (the pyspark distribution ships
# spark-daemon.sh but not this launcher). Extra arguments go to the Master class,
# e.g. `start-master.sh -h 10.0.0.5`.
SPARK_HOME="${SPARK_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
export SPARK_HOME
. "$SPARK_HOME/sbin/spark-config.sh"
. "$SPARK_HOME/bin/load-spark-env.sh"

host="${SPARK_MASTER_HOST:-$(hostname -f 2>/dev/null || hostname)}"
exec "$SPARK_HOME/sbin/spark-daemon.sh" start org.apache.spark.deploy.master.Master 1 \
    --host "$host" --port "${SPARK_MASTER_PORT:-7077}" \
    --webui-port "${SPARK_MASTER_WEBUI_PORT:-8080}" "$@"
