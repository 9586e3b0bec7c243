"""The PySpark kernel's start: Spark connects in the background, the kernel answers at once.

Spark's own shell.py (run as PYTHONSTARTUP) starts a JVM and a SparkContext before the
kernel answers anything: 10-20 s in which the notebook shows a busy kernel. Here it runs
in a thread instead; a cell that names Spark (spark, sc, sql, sqlContext, pyspark,
SparkSession, SparkContext) first waits for it, then finds `spark` and `sc` as shell.py
made them. Other cells run at once. Once Spark is there, Ctrl-C (the kernel's interrupt)
cancels the running Spark jobs, as shell.py does in a terminal.

The first cell that names Spark shows a link to the application's UI (jobs, stages,
executors) through the user's own notebook server, and `spark_ui` holds it.

When Spark does not start (it is tried twice), the first cell that names it shows Spark's
own error, and `spark`, `sc`, ... say so when used.

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
import traceback
from urllib.parse import urlsplit


def _sparkstack_start_spark() -> None:
    shell = os.path.join(os.environ["SPARK_HOME"], "python", "pyspark", "shell.py")
    names = ("spark", "sc", "sql", "sqlContext")
    uses_spark = re.compile(r"\b(spark|sc|sql|sqlContext|pyspark|SparkSession|SparkContext)\b")
    state = {}
    ready = threading.Event()

    class NoSpark:
        """What `spark`, `sc`, ... are when Spark did not start: any use says why, instead
        of a NameError that reads like a typo."""

        def __init__(self, name: str, error: BaseException) -> None:
            why = f"{type(error).__name__}: {error}"
            self._message = (f"Spark did not start, so there is no `{name}` ({why}); "
                             "restart the kernel to try again")

        def __getattr__(self, attr: str):
            if attr.startswith("_"):  # IPython's display probes, copy, pickle
                raise AttributeError(attr)
            raise RuntimeError(self._message)

        def __call__(self, *args, **kwargs):
            raise RuntimeError(self._message)

        def __repr__(self) -> str:
            return f"<{self._message}>"

    def quiet(*args, **kwargs) -> None:
        pass

    def connect() -> None:
        # A second try when the first fails: a JVM that lost a race for a port or memory
        # on a busy master starts on the next; a broken setup fails the same way twice.
        for attempt in (1, 2):
            try:
                # The banner is all shell.py prints; the kernel's name has the version.
                state["ns"] = runpy.run_path(shell, run_name="__sparkstack_shell__",
                                             init_globals={"print": quiet})
                state.pop("error", None)
                break
            except BaseException as exc:
                # shell.py reports a failed session with sys.exit(1) inside its `except`:
                # the exception it handled is the one that says why
                cause = exc.__context__ if isinstance(exc, SystemExit) else None
                state["error"] = cause or exc
                print(f"Spark did not start (try {attempt} of 2):", file=sys.__stderr__)
                traceback.print_exception(state["error"], file=sys.__stderr__)
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
            error = state["error"]
            print("".join(traceback.format_exception(error)), file=sys.stderr, flush=True)
            for name in names:
                ipython.user_ns.setdefault(name, NoSpark(name, error))
            return
        for name in names:
            if name in state["ns"]:
                ipython.user_ns.setdefault(name, state["ns"][name])
        context = state["ns"].get("sc")
        show_ui_link(context)

        def interrupt(signum, frame):
            if context is not None:
                context.cancelAllJobs()
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, interrupt)

    def show_ui_link(context) -> None:
        # The application's UI through the user's own server (its sparkui extension):
        # a link above the first Spark cell's output, and `spark_ui` for later.
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        try:
            port = urlsplit(context.uiWebUrl).port if context is not None else None
        except Exception:  # the UI is off (spark.ui.enabled=false)
            port = None
        if not prefix or not port:
            return
        link = f"{prefix.rstrip('/')}/sparkui/{port}/"
        ipython.user_ns.setdefault("spark_ui", link)
        from IPython.display import display

        # HTML only: a client that reads text/plain (sparkstack smoke) sees nothing here
        display({"text/html": f'<a href="{link}" target="_blank">Spark UI</a>'}, raw=True)

    ipython.events.register("pre_run_cell", before_cell)


_sparkstack_start_spark()
del _sparkstack_start_spark
