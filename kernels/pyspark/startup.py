"""The PySpark kernel's start: Spark connects in the background, the kernel answers at once.

Spark's own shell.py (run as PYTHONSTARTUP) starts a JVM and a SparkContext before the
kernel answers anything: 10-20 s in which the notebook shows a busy kernel. Here it runs
in a thread instead; a cell that names Spark (spark, sc, sql, sqlContext, pyspark,
SparkSession, SparkContext) first waits for it, then finds `spark` and `sc` as shell.py
made them. Other cells run at once. Once Spark is there, Ctrl-C (the kernel's interrupt)
cancels the running Spark jobs, as shell.py does in a terminal.

A notebook shows only what its cells print: shell.py's banner is dropped (printed from the
background it would land in whichever cell runs then, as a red stderr box), and the
"waiting" notice a cell shows while Spark connects is cleared once Spark is there.
"""

import os
import re
import runpy
import signal
import sys
import threading


def _sparkstack_start_spark() -> None:
    shell = os.path.join(os.environ["SPARK_HOME"], "python", "pyspark", "shell.py")
    names = ("spark", "sc", "sql", "sqlContext")
    uses_spark = re.compile(r"\b(spark|sc|sql|sqlContext|pyspark|SparkSession|SparkContext)\b")
    state = {}
    ready = threading.Event()

    def quiet(*args, **kwargs) -> None:
        pass

    def connect() -> None:
        try:
            # The banner is all shell.py prints; the kernel's display name has the version.
            state["ns"] = runpy.run_path(shell, run_name="__sparkstack_shell__",
                                         init_globals={"print": quiet})
        except BaseException as exc:  # shell.py ends with sys.exit(1) when Spark fails
            state["error"] = exc
        finally:
            ready.set()

    threading.Thread(target=connect, name="spark-connect", daemon=True).start()
    ipython = get_ipython()  # noqa: F821 (IPython runs this file in the user's namespace)

    def before_cell(info) -> None:
        if not uses_spark.search(getattr(info, "raw_cell", "") or ""):
            return
        if not ready.is_set():
            print("waiting for Spark to connect ...", file=sys.stderr, flush=True)
            ready.wait()
            # the notice is this cell's only output so far: the cell shows its own from here
            from IPython.display import clear_output

            clear_output()
        ipython.events.unregister("pre_run_cell", before_cell)
        if "error" in state:
            print(f"Spark did not start: {state['error']!r}; see the kernel's log",
                  file=sys.stderr, flush=True)
            return
        for name in names:
            if name in state["ns"]:
                ipython.user_ns.setdefault(name, state["ns"][name])
        context = state["ns"].get("sc")

        def interrupt(signum, frame):
            if context is not None:
                context.cancelAllJobs()
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, interrupt)

    ipython.events.register("pre_run_cell", before_cell)


_sparkstack_start_spark()
del _sparkstack_start_spark
