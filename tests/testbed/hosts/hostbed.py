"""The host half of the test bed as one unit: rootfs, mirrors, bridge, hypervisor.

Mirrors: the Spark tarball, plus, for nodes booted from a stock image (rootfs.STOCK_SUITES),
a PyPI index and an npm registry of exactly what the project's locks name (HTTP :8800 and
HTTPS :8443 with the bed's CA) and an apt proxy (apt-cacher-ng, :3142), all on 10.77.0.1.

    python -m tests.testbed.hosts.hostbed build   # build or reuse trees + mirrors, start nothing
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

from . import aptcache, hosts, hypervisor, mirror, npm_mirror, pypi_mirror, rootfs, tls

log = logging.getLogger(__name__)


def is_up() -> bool:
    return hypervisor.running_pid() is not None and mirror._running_pid(None) is not None


def build(*, spark_version: str = mirror.DEFAULT_VERSION) -> dict[str, float]:
    """Build (or reuse) the rootfs, its systemd layer and the Spark tarball without
    starting anything.

    CI builds them in a stage of their own, so the hypervisor runs only while the host
    tests do: started earlier it would boot a host for every server the cloud tests create.
    """
    timings: dict[str, float] = {}

    def step(name: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        start = time.monotonic()
        result = fn(*args, **kwargs)
        timings[name] = time.monotonic() - start
        return result

    base = step("rootfs", rootfs.ensure_rootfs)
    # Hosts booted with init="systemd" stack it on the pre-baked tree.
    step("systemd layer", rootfs.ensure_systemd_layer, base)
    for suite in rootfs.STOCK_SUITES:
        step(f"stock rootfs {suite}", rootfs.ensure_stock_rootfs, suite)
    step("spark mirror", mirror.build_tarball, version=spark_version)
    served = mirror.mirror_root()
    pypi_mirror.publish(step("pypi mirror", pypi_mirror.build), served)
    npm_mirror.publish(step("npm mirror", npm_mirror.build), served)
    step("mirror CA", tls.ensure_server_cert, mirror.BIND)
    step("apt-cacher-ng install", aptcache.install)
    return timings


def up(*, spark_version: str = mirror.DEFAULT_VERSION) -> dict[str, float]:
    """Bring the host half up; returns seconds per step (a reused cache is fast)."""
    timings = build(spark_version=spark_version)
    start = time.monotonic()
    hosts.ensure_bridge()
    mirror.start_server()
    mirror.start_server(https=True)
    aptcache.start()
    hypervisor.start()
    timings["start"] = time.monotonic() - start
    return timings


def down() -> None:
    """Stop the hypervisor (killing every host), the mirrors, remove the bridge."""
    hypervisor.stop(kill_hosts=True)
    aptcache.stop()
    mirror.stop_server(https=True)
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
                         f"pypi: {mirror.pypi_url()}  npm: {mirror.npm_url()}  "
                         f"https: {mirror.pypi_url(https=True)}\n"
                         f"apt proxy: {mirror.apt_proxy_url()}  CA: {mirror.ca_cert_path()}\n"
                         f"hypervisor log: {hypervisor.log_path()}\n")
    elif args.action == "down":
        down()
    else:
        sys.stdout.write("up\n" if is_up() else "down\n")
        sys.exit(0 if is_up() else 1)


if __name__ == "__main__":
    main()
