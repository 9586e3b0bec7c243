"""`sparkstack ssh|logs|tunnel`: a shell, a command, a log or the Spark UIs of one node, over
the system's ssh client with the cluster's pinned host keys (see provisioner/openssh.py)."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from provisioner import plan as P
from provisioner.commands.common import InventoryOpt, cluster_cloud, load, session
from provisioner.errors import NodeUnreachable, RemoteError, UserInputError
from provisioner.interrupts import Signalled, installed, signum_of

# What the system's ssh exits with when it fails itself (could not connect, authenticate,
# verify the host key), as opposed to the remote command's own status (ssh(1)).
SSH_FAILED = 255

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.inventory import Inventory

NodeArg = Annotated[
    str,
    typer.Argument(
        help="The node: 'master' (default), a worker's number ('2'), 'worker-2', or its "
        "full server name."
    ),
]


def resolve_node(observed: P.Observed, spec: str) -> P.Node:
    """The node `spec` names; a user error listing the nodes when it names none."""
    spec = spec.strip()
    for node in observed.nodes:
        short = "master" if node.role == P.MASTER else f"worker-{node.index}"
        if spec in (node.name, short) or (node.role != P.MASTER and spec == str(node.index)):
            return node
    names = ", ".join(n.name for n in observed.nodes) or "none"
    raise UserInputError(
        f"no node {spec!r} in cluster {observed.cluster}",
        hint=f"its nodes: {names}",
    )


class ClusterSSH:
    """What the three commands share: the cluster read once, the host keys of the nodes
    they touch pinned into a known_hosts file of the cluster's own."""

    def __init__(self, inv: Inventory) -> None:
        from provisioner import openssh
        from provisioner.keys import config_dir
        from provisioner.workflows.ssh_stage import Access

        self.inv = inv
        self.cloud = cluster_cloud(inv)
        self.observed = self.cloud.observe()
        master = self.observed.master()
        if master is None or not (master.floating_ip or master.fixed_ip):
            raise UserInputError(
                f"cluster {inv.cluster.name} has no master", hint="run `sparkstack up` first"
            )
        self.master = master
        self.access = Access.from_inventory(inv)
        self.known_hosts = config_dir(inv.cluster.name) / openssh.KNOWN_HOSTS
        self.hops = {master.name: openssh.Hop(master.name, master.floating_ip or master.fixed_ip)}
        self.client = openssh.Client(
            user=self.access.user, key_file=self.access.key_file, known_hosts=self.known_hosts,
            master=self.hops[master.name], binary=openssh.ssh_binary(),
        )  # fmt: skip

    def hop(self, node: P.Node) -> Any:
        from provisioner import openssh

        return self.hops.get(node.name) or openssh.Hop(node.name, node.fixed_ip)

    def pin(self, nodes: list[P.Node]) -> None:
        """Write the known_hosts file for `nodes` (and the master, every path's first hop)."""
        from provisioner import openssh
        from provisioner.hostkeys import KnownHosts, lookup_name
        from provisioner.workflows.ssh_stage import console_keys

        keys = {}
        for node in {n.name: n for n in [self.master, *nodes]}.values():
            address = self.hop(node).address
            if self.access.trust == "first-use":
                found = KnownHosts(self.access.known_hosts_dir).get(lookup_name(address))
                if not found:
                    raise RemoteError(
                        f"no host key recorded for {node.name} ({address})",
                        resource=node.name,
                        step="ssh",
                        hint="`sparkstack up` records it on its first connection",
                    )
            else:
                found = console_keys(self.cloud, node, deadline=time.monotonic() + 10)
            keys[address] = found
        openssh.write_known_hosts(self.known_hosts, keys)


def _remote(inv: Inventory, spec: str, command: str | None, *, tty: bool) -> int:
    from provisioner import openssh

    cluster = ClusterSSH(inv)
    node = resolve_node(cluster.observed, spec)
    cluster.pin([node])
    argv = cluster.client.argv(cluster.hop(node), extra=["-t"] if tty else [], command=command)
    return openssh.run(argv)


def _all_after_dashes(words: list[str]) -> bool:
    """True when every positional word came after `--` (click drops the `--` itself)."""
    argv = sys.argv[1:]
    if "--" not in argv:
        return False
    return argv[argv.index("--") + 1 :] == words


def _log_command(source: str, *, lines: int, follow: bool) -> str:
    n = f"-n {lines}" if lines > 0 else "-n +1"
    f = " -F" if follow else ""
    if source == "cloud-init":
        script = f"tail {n}{f} /var/log/cloud-init-output.log"
    elif source == "spark":
        # No log before the daemon's first start, which waits for the cluster's secret.
        script = (
            "ls /var/log/spark/spark-*.out >/dev/null 2>&1 || { echo 'no Spark log yet: the "
            "daemon starts once `sparkstack up` has brought the cluster secret' >&2; exit 1; }; "
            f"tail {n}{f} /var/log/spark/spark-*.out"
        )
    else:
        from provisioner.hub.config import UNIT_NAME

        jf = " -f" if follow else ""
        jn = f"-n {lines}" if lines > 0 else "-n all"
        # journalctl where systemd runs; the daemonless systemctl of small images logs
        # each unit to a file instead.
        script = (
            f"if [ -d /run/systemd/system ] && command -v journalctl >/dev/null; then "
            f"journalctl -u {UNIT_NAME} {jn}{jf} --no-pager; "
            f"else tail {n}{f} /var/log/journal/{UNIT_NAME}.service.log; fi"
        )
    return f"sudo sh -c {shlex.quote(script)}"


def _logs_exit(code: int, *, target: str, follow: bool, ssh_said: list[str]) -> int:
    """`logs`' exit code from ssh's. A signal decides first: Ctrl-C is how a follow is
    meant to end (0); otherwise a signal ends it like any other command (128 + N), even
    though ssh, which got it too, may exit 255 for it. Then 255 is ssh failing to
    connect: a NodeUnreachable quoting ssh."""
    handler = installed()
    received = handler.received if handler else None
    if received is not None:
        if follow and received == signal.SIGINT:
            return 0
        raise Signalled(received)
    if code == SSH_FAILED:
        # At LogLevel=ERROR what ssh printed last is its own few lines about the failure.
        said = "; ".join(line.strip() for line in ssh_said[-4:] if line.strip())
        raise NodeUnreachable(
            f"ssh could not connect: {said or 'exit 255'}",
            resource=target,
            step="logs",
            hint="`sparkstack status` shows whether the node is up",
        )
    return code


def _free_port(preferred: int, taken: set[int]) -> int:
    """`preferred` if nothing on this machine listens there, else the next free one."""
    port = preferred
    while True:
        if port not in taken:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    pass
        port += 1


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": False})
    def ssh(
        node: NodeArg = "master",
        command: Annotated[
            list[str] | None,
            typer.Argument(
                help="A command to run instead of a shell (after --).", show_default=False
            ),
        ] = None,
        inventory: InventoryOpt = Path("inventory.toml"),
    ) -> None:
        """A shell, or a command, on a node (workers through the master), with the host
        keys pinned for the cluster. The exit code is the remote command's."""
        command = list(command or [])
        if command[:1] == ["--"]:
            # With interspersed arguments off, click keeps a `--` that follows NODE.
            command = command[1:]
        words = [node, *command]
        if _all_after_dashes(words):
            # `ssh -- hostname`: every word was the command; the node is the default.
            node, command = "master", words
        inv = load(inventory)
        with session(inv.cluster.name):
            line = " ".join(command) if command else None
            code = _remote(inv, node, line, tty=False)
            handler = installed()
            if handler and handler.received is not None:
                # ssh got the signal too and says 255; what stopped it was the signal
                raise Signalled(handler.received)
        raise typer.Exit(code)

    @app.command()
    def logs(
        node: NodeArg = "master",
        inventory: InventoryOpt = Path("inventory.toml"),
        cloud_init: Annotated[
            bool, typer.Option("--cloud-init", help="cloud-init's output (the default).")
        ] = False,
        spark: Annotated[bool, typer.Option("--spark", help="The Spark daemon's log.")] = False,
        hub: Annotated[bool, typer.Option("--hub", help="JupyterHub's log (master).")] = False,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
        lines: Annotated[
            int, typer.Option("--lines", "-n", min=0, help="Last lines to show; 0 = all.")
        ] = 200,
    ) -> None:
        """A node's boot log, Spark log or hub log; -f follows it until Ctrl-C."""
        chosen = [s for s, on in (("cloud-init", cloud_init), ("spark", spark), ("hub", hub)) if on]
        if len(chosen) > 1:
            raise UserInputError(
                f"choose one of --cloud-init, --spark, --hub (got {', '.join(chosen)})"
            )
        source = chosen[0] if chosen else "cloud-init"
        inv = load(inventory)
        with session(inv.cluster.name):
            cluster = ClusterSSH(inv)
            target = resolve_node(cluster.observed, node)
            if source == "hub" and target.role != P.MASTER:
                raise UserInputError(f"the hub runs on the master, not on {target.name}")
            cluster.pin([target])
            from provisioner import openssh

            argv = cluster.client.argv(
                cluster.hop(target),
                extra=["-t"] if follow and sys.stdin.isatty() else [],
                command=_log_command(source, lines=lines, follow=follow),
            )
            ssh_said: list[str] = []
            code = openssh.run(argv, stderr_tail=ssh_said)
            raise typer.Exit(_logs_exit(code, target=target.name, follow=follow, ssh_said=ssh_said))

    @app.command()
    def tunnel(
        inventory: InventoryOpt = Path("inventory.toml"),
        apps: Annotated[
            int,
            typer.Option(min=1, max=100, help="Application UIs to forward (4040 and on)."),
        ] = 10,
    ) -> None:
        """Forward the Spark master UI, the application UIs and every worker's UI to
        localhost over SSH; prints the local URLs and holds until Ctrl-C."""
        from provisioner.inventory.names import (
            SPARK_APP_UI_PORT,
            SPARK_MASTER_UI_PORT,
            SPARK_WORKER_UI_PORT,
        )

        inv = load(inventory)
        out = Console(emoji=False)
        err = Console(stderr=True, emoji=False)
        with session(inv.cluster.name):
            cluster = ClusterSSH(inv)
            cluster.pin([])
            mip = cluster.master.fixed_ip
            wanted = [("Spark master UI", SPARK_MASTER_UI_PORT, mip, SPARK_MASTER_UI_PORT)]
            wanted += [(f"{w.name} UI", SPARK_WORKER_UI_PORT + i, w.fixed_ip, SPARK_WORKER_UI_PORT)
                       for i, w in enumerate(cluster.observed.workers())]  # fmt: skip
            app_ports = [SPARK_APP_UI_PORT + i for i in range(apps)]
            wanted += [(f"application UI {i + 1}", p, mip, p) for i, p in enumerate(app_ports)]
            taken: set[int] = set()
            forwards = []
            for label, local, host, port in wanted:
                lp = _free_port(local, taken)
                taken.add(lp)
                forwards.append((label, lp, host, port))
            extra = ["-N", "-o", "ExitOnForwardFailure=yes"]
            for _, lp, host, port in forwards:
                extra += ["-L", f"127.0.0.1:{lp}:{host}:{port}"]
            argv = cluster.client.argv(cluster.hop(cluster.master), extra=extra)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 60
                while not all(_listening(lp) for _, lp, _, _ in forwards):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RemoteError(
                            "the SSH tunnel did not come up",
                            resource=cluster.master.name,
                            step="tunnel",
                            hint="`sparkstack ssh` shows whether the master is reachable",
                        )
                    time.sleep(0.2)
                for label, lp, _, _ in forwards:
                    out.print(f"{label:<24} http://127.0.0.1:{lp}/", highlight=False)
                err.print("tunnel open; Ctrl-C closes it", highlight=False)
                code = proc.wait()
                raise RemoteError(
                    f"the SSH tunnel closed (ssh exit {code})",
                    resource=cluster.master.name,
                    step="tunnel",
                )
            except KeyboardInterrupt as exc:
                _close(proc)  # the forwards end with ssh, before anything is reported
                err.print("tunnel closed", highlight=False)
                if signum_of(exc) != signal.SIGINT:
                    # Ctrl-C is how a tunnel is meant to end (0); SIGTERM and SIGHUP end
                    # it like any other command, 128 + the signal's number.
                    raise
            finally:
                _close(proc)


def _close(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait()
