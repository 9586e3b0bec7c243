"""`tunnel` and `logs` exit like every other command, on servers that really boot:
SIGTERM and SIGHUP end a tunnel with 143 and 129 and its forwards closed; a SIGTERM ends
`logs -f` with 143 (Ctrl-C still with 0); ssh failing to connect ends `logs -f` with exit 3
naming the node and quoting ssh, not 0."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli

from .test_ssh_stage import inventory

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NAME = "exits"


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _tunnel_until(sig: signal.Signals, inv: Path, env: dict[str, str]) -> tuple[int, str, int]:
    """(exit code, stderr, the master UI's local port) of a tunnel that got `sig` once
    every forward listened."""
    tunnel = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "tunnel", "-i", str(inv), "--apps", "1"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tunnel.stdout is not None
        first = tunnel.stdout.readline()  # printed once every forward listens
        match = re.match(r"Spark master UI\s+http://127\.0\.0\.1:(\d+)/", first)
        assert match, first + (tunnel.communicate()[1] if tunnel.poll() is not None else "")
        local = int(match.group(1))
        assert not _closed(local)
        tunnel.send_signal(sig)
        _, err = tunnel.communicate(timeout=60)
    finally:
        if tunnel.poll() is None:
            tunnel.kill()
            tunnel.wait()
    return tunnel.returncode, err, local


def _follow_until(
    sig: signal.Signals, inv: Path, env: dict[str, str], *, group: bool
) -> tuple[int, str]:
    """(exit code, stderr) of `logs -f` on worker 1 that got `sig` once a line came."""
    follow = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "logs", "-i", str(inv), "-f", "-n", "1",
         "worker-1"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        line = follow.stdout.readline()  # the log's last line: ssh is in, following
        assert line, follow.communicate()[1]
        if group:
            os.killpg(follow.pid, sig)
        else:
            follow.send_signal(sig)
        _, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    return follow.returncode, err


def test_signals_end_tunnel_and_logs_with_128_plus_n_and_refused_logs_exit_3(
    hostbed: object, clean_project: Any, tmp_path: Path
) -> None:
    inv = inventory(tmp_path / "inv.toml", name=NAME, workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    try:
        up = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        assert up.returncode == 0, up.stderr

        for sig in (signal.SIGTERM, signal.SIGHUP):
            code, err, local = _tunnel_until(sig, inv, env)
            assert code == 128 + sig, err
            assert f"interrupted by {sig.name}" in " ".join(err.split()), err
            assert "Traceback" not in err
            assert _closed(local), f"the forward on {local} outlived the tunnel ({sig.name})"

        # logs -f: a SIGTERM to sparkstack alone is 143; Ctrl-C at a terminal (the whole
        # process group) is how a follow ends, 0.
        for sig, group, expected in ((signal.SIGTERM, False, 143), (signal.SIGINT, True, 0)):
            code, err = _follow_until(sig, inv, env, group=group)
            assert code == expected, err
            assert "Traceback" not in err

        # A user the nodes do not have: sshd refuses the login and ssh exits 255.
        text = inv.read_text()
        refused = tmp_path / "refused.toml"
        refused.write_text(re.sub(r'(?m)^user = "debian"$', 'user = "nobody-here"', text))
        assert refused.read_text() != text
        logs = run_cli("logs", "-i", str(refused), "-f", "worker-1", env=env, check=False,
                       timeout=120)  # fmt: skip
        err = " ".join(logs.stderr.split())
        assert logs.returncode == 3, logs.stderr
        assert f"[logs] {NAME}-worker-1: ssh could not connect:" in err, err
        assert "Permission denied" in err.split("ssh could not connect:", 1)[1], err
    finally:
        run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert cluster_resources(clean_project.admin(), NAME) == {}
