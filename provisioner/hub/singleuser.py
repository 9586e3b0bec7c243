"""Pure: what every user's single-user server starts with, beyond the hub's arguments.

The command (under a private umask) is part of the hub's config; the server's own config
and JupyterLab's setting defaults are files the `lab` step writes where each server reads
them at its start (JUPYTER_CONFIG_PATH), so changing them needs no hub restart.
"""

from __future__ import annotations

import json
from importlib.resources import files

from provisioner.render import KERNEL_DIR, VENV

# The jupyter_server extension that serves each user's Spark UIs through their server
# (kernels/sparkui/): its module name on the servers' PYTHONPATH.
SPARKUI_EXTENSION = "sparkstack_sparkui"

# The kernelspec's name: the directory kernel.json is in.
PYSPARK_KERNEL = KERNEL_DIR.rstrip("/").rsplit("/", 1)[-1]
# Every user's server, and all it starts (kernels, terminals, the Spark driver), makes
# files only its user can read: notebooks, data written from a kernel, files in /tmp.
SINGLEUSER_UMASK = "077"
# Added to the OOM killer's score of every user's server and what it starts (of 1000: a
# notebook that takes half the memory scores about 1000, the hub with a tenth about 100).
NOTEBOOK_OOM_SCORE_ADJ = 500


def singleuser_cmd() -> list[str]:
    """The single-user server's command: jupyterhub-singleuser under umask 077.

    A shell sets the umask and execs the server in place (same pid, the spawner's
    arguments passed through as "$@"). It is the command, not a preexec hook of
    LocalProcessSpawner, that carries it: every spawner runs `Spawner.cmd` (a systemd
    unit made by another spawner would otherwise start with systemd's umask 022), and no
    hub internals are subclassed. The umask is inherited by the kernels, terminals and
    Spark driver the server starts; Jupyter saves a new notebook with the process's umask
    and keeps an existing file's mode.

    It also raises the server's OOM score (NOTEBOOK_OOM_SCORE_ADJ), which everything it
    starts inherits: when the master runs out of memory, the kernel's OOM killer takes a
    notebook (the biggest first, as they all carry the same score) before the hub, its
    proxy or the Spark master. Raising one's own score needs no privilege; a kernel that
    refuses the write (none known) leaves the server as it was rather than failing it.
    """
    script = (
        f"echo {NOTEBOOK_OOM_SCORE_ADJ} >/proc/self/oom_score_adj 2>/dev/null; "
        f'umask {SINGLEUSER_UMASK} && exec "$@"'
    )
    return ["/bin/sh", "-c", script, "singleuser", f"{VENV}/bin/jupyterhub-singleuser"]


def singleuser_config() -> dict[str, dict[str, object]]:
    """What every user's server is configured with, beyond the hub's arguments.

    The PySpark kernel is the default: what a new notebook gets, and what JupyterLab's
    launcher lists first (it ranks the default kernel before all others). It is also the
    only kernel offered: the venv's own "Python 3 (ipykernel)" would start without `sc`,
    and jupyter_client's allow-list is the one setting that hides it (its kernel_dirs is
    not configurable, and ensure_native_kernel only stops it being added when it is not
    installed - ipykernel installs it into the venv). No news feed or update check is
    fetched from the internet by every user's server.
    """
    return {
        "MappingKernelManager": {"default_kernel_name": PYSPARK_KERNEL},
        "KernelSpecManager": {"allowed_kernelspecs": [PYSPARK_KERNEL]},
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        },
    }


def render_singleuser_config() -> str:
    """jupyter_server_config.json, which each server reads from every JUPYTER_CONFIG_PATH
    directory at its start."""
    return json.dumps(singleuser_config(), indent=2, sort_keys=True) + "\n"


# JupyterLab 4.6's settings schema @jupyterlab/apputils-extension:notification: fetchNews
# "none" (its default) asks every user about the Jupyter news; "false" is "Never".
LAB_SETTING_DEFAULTS: dict[str, dict[str, object]] = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def render_lab_overrides() -> str:
    """labconfig/default_setting_overrides.json: JupyterLab's setting defaults."""
    return json.dumps(LAB_SETTING_DEFAULTS, indent=2, sort_keys=True) + "\n"


def sparkui_module(name: str = SPARKUI_EXTENSION) -> str:
    """kernels/sparkui/<name>.py: the extension's code, or the cluster UI service's."""
    return files("provisioner.kernels").joinpath("sparkui", f"{name}.py").read_text()


def render_sparkui_enabled() -> str:
    """The file `jupyter server extension enable` writes: the extension on, for every
    server that reads this config path."""
    enabled = {"ServerApp": {"jpserver_extensions": {SPARKUI_EXTENSION: True}}}
    return json.dumps(enabled, indent=2, sort_keys=True) + "\n"
