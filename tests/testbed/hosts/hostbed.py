"""The host half of the test bed as one unit: rootfs, Spark mirror, bridge, hypervisor.

    python -m tests.testbed.hosts.hostbed build   # build or reuse rootfs + mirror, start nothing
    python -m tests.testbed.hosts.hostbed up      # build or reuse, start (idempotent)
    python -m tests.testbed.hosts.hostbed down    # stop hypervisor and mirror, kill hosts

The OpenStack half (tests/testbed/controlplane) must be up first: the hypervisor
watches its Nova.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import hosts, hypervisor, mirror, rootfs

log = logging.getLogger(__name__)


def is_up() -> bool:
    return hypervisor.running_pid() is not None and mirror._running_pid(None) is not None


def build(*, spark_version: str = mirror.DEFAULT_VERSION) -> dict[str, float]:
    """Build (or reuse) the rootfs and the Spark tarball without starting anything.

    CI builds them in a stage of their own, so the hypervisor runs only while the host
    tests do: started earlier it would boot a host for every server the cloud tests create.
    """
    timings: dict[str, float] = {}
    start = time.monotonic()
    rootfs.ensure_rootfs()
    timings["rootfs"] = time.monotonic() - start
    start = time.monotonic()
    mirror.build_tarball(version=spark_version)
    timings["spark mirror"] = time.monotonic() - start
    return timings


def up(*, spark_version: str = mirror.DEFAULT_VERSION) -> dict[str, float]:
    """Bring the host half up; returns seconds per step (a reused cache is fast)."""
    timings = build(spark_version=spark_version)
    start = time.monotonic()
    hosts.ensure_bridge()
    mirror.start_server()
    hypervisor.start()
    timings["start"] = time.monotonic() - start
    return timings


def down() -> None:
    """Stop the hypervisor (killing every host), the mirror server, remove the bridge."""
    hypervisor.stop(kill_hosts=True)
    mirror.stop_server()
    hosts.remove_bridge()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.hosts.hostbed")
    parser.add_argument("action", choices=["build", "up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.action == "build":
        for step, seconds in build().items():
            sys.stdout.write(f"{step}: {seconds:.1f} s\n")
    elif args.action == "up":
        for step, seconds in up().items():
            sys.stdout.write(f"{step}: {seconds:.1f} s\n")
        sys.stdout.write(f"spark mirror: {mirror.mirror_url()}\n"
                         f"hypervisor log: {hypervisor.log_path()}\n")
    elif args.action == "down":
        down()
    else:
        sys.stdout.write("up\n" if is_up() else "down\n")
        sys.exit(0 if is_up() else 1)


if __name__ == "__main__":
    main()
