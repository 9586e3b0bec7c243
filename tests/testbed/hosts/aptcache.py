"""apt-cacher-ng on the bridge: the apt proxy of nodes booted from a stock image.

Namespace hosts have no route out; a stock-image node installs Java & co. with apt through
`Acquire::http::Proxy "http://10.77.0.1:3142"`, and this proxy fetches from the Debian
archive the node's sources.list names (the one this machine's apt uses), caching what it
fetched under /var/cache/sparkstack-testbed/apt-cacher-ng for the next boot.

No systemd here: the bed runs the daemon itself in the foreground, with a config dir of
its own (the package's /etc/apt-cacher-ng is left alone), and records pid + start time so
that only that process is ever signalled.

    python -m tests.testbed.hosts.aptcache install | start | stop | status
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import hosts as hostlib

log = logging.getLogger(__name__)

BIND = "10.77.0.1"
PORT = 3142
CACHE_DIR = Path("/var/cache/sparkstack-testbed/apt-cacher-ng")
BINARY = "/usr/sbin/apt-cacher-ng"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def proxy_url(*, bind: str = BIND, port: int = PORT) -> str:
    return f"http://{bind}:{port}"


def _state_dir() -> Path:
    return hostlib.default_state_dir() / "apt-cacher-ng"


def _pid_file() -> Path:
    return _state_dir() / "apt-cacher-ng.pid"


def log_dir() -> Path:
    return _state_dir() / "log"


def install() -> None:
    """apt-get install apt-cacher-ng if missing, without letting its package start the
    system's own instance (policy-rc.d, removed again unless it was there before)."""
    if Path(BINARY).exists():
        return
    created = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text("#!/bin/sh\n# no daemons from package scripts\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        created = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        "apt-cacher-ng"], check=True, env=env)
    finally:
        if created:
            POLICY_RC_D.unlink(missing_ok=True)


def _write_config(*, bind: str, port: int) -> Path:
    conf = _state_dir() / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    log_dir().mkdir(parents=True, exist_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # The package runs as user apt-cacher-ng; started by root it stays root, but keep the
    # cache usable by a packaged instance too.
    (conf / "acng.conf").write_text(
        f"CacheDir: {CACHE_DIR}\n"
        f"LogDir: {log_dir()}\n"
        "SupportDir: /usr/lib/apt-cacher-ng\n"
        f"BindAddress: {bind}\n"
        f"Port: {port}\n"
        "ForeGround: 1\n"
        "ReportPage: acng-report.html\n"
        "ExThreshold: 4\n"
        # No Remap-* lines: nodes name the real archive URL and the proxy fetches exactly
        # that. An https archive can only be tunnelled (CONNECT), not cached.
        "PassThroughPattern: .*:443$\n"
    )
    return conf


def running_pid() -> int | None:
    return hostlib.recorded_pid(_pid_file())


def start(*, bind: str = BIND, port: int = PORT) -> int:
    """Start the proxy in the background (the bridge must exist); idempotent."""
    pid = running_pid()
    if pid is not None:
        return pid
    install()
    conf = _write_config(bind=bind, port=port)
    with (_state_dir() / "stdout.log").open("ab") as out:
        proc = subprocess.Popen([BINARY, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _pid_file().write_text(f"{proc.pid} {hostlib._pid_start(proc.pid)}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"apt-cacher-ng exited with {proc.returncode}; see {log_dir()}")
        try:
            with socket.create_connection((bind, port), timeout=1):
                log.info("apt proxy on %s (cache %s)", proxy_url(bind=bind, port=port),
                         CACHE_DIR)
                return proc.pid
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"apt-cacher-ng not listening on {bind}:{port} after 15 s")


def stop() -> None:
    hostlib.stop_recorded(_pid_file())


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.hosts.aptcache")
    parser.add_argument("action", choices=["install", "start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.action == "install":
        install()
    elif args.action == "start":
        hostlib.ensure_bridge()
        sys.stdout.write(f"apt-cacher-ng pid {start()}, {proxy_url()}\n")
    elif args.action == "stop":
        stop()
    else:
        pid = running_pid()
        sys.stdout.write(f"apt-cacher-ng: {f'pid {pid}' if pid else 'not running'}\n")
        sys.exit(0 if pid else 1)


if __name__ == "__main__":
    main()
