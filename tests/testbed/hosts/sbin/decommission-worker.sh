#!/usr/bin/env bash
# decommission-worker: the launcher the pyspark distribution lacks; spark-daemon.sh does the work.
SPARK_HOME="${SPARK_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
export SPARK_HOME
. "$SPARK_HOME/sbin/spark-config.sh"
exec "$SPARK_HOME/sbin/spark-daemon.sh" decommission org.apache.spark.deploy.worker.Worker 1
