#!/usr/bin/env bash
# stop-master: the launcher the pyspark distribution lacks; spark-daemon.sh does the work.
SPARK_HOME="${SPARK_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
export SPARK_HOME
. "$SPARK_HOME/sbin/spark-config.sh"
exec "$SPARK_HOME/sbin/spark-daemon.sh" stop org.apache.spark.deploy.master.Master 1
