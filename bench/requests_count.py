"""API requests and wall time of `up` and `down` for clusters of 1+N on the test bed.

Every request goes through the test bed's counting proxy, so the numbers are what the
cloud saw (authentication and version discovery included). Target: up of 1+N makes at
most N + 60 requests.

    python -m bench.requests_count 1 10 50
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from provisioner import workflows
from provisioner.cloud import ClusterCloud
from provisioner.inventory import parse_inventory
from tests.testbed import bed
from tests.testbed.faultproxy import FaultProxy


def _inventory(name: str, workers: int, parallel: int):
    data = {
        "cluster": {
            "name": name,
            "cloud": "proxied",
            "image": "debian-12",
            "max_parallel_creates": parallel,
        },
        "network": {
            "name": "private",
            "floating_ip_pool": "public",
            "allowed_cidrs": ["203.0.113.0/24"],
        },
        "master": {"flavor": "m1.tiny"},
        "workers": {"flavor": "m1.tiny", "count": workers},
    }
    return parse_inventory(data, source=f"<bench {name}>")


def _user_data(inv):
    from provisioner.render import render_cloud_init

    return lambda role, ip: render_cloud_init(inv, role=role, master_ip=ip)


def measure(n: int, *, parallel: int, workdir: Path) -> dict[str, float]:
    inv = _inventory(f"bench-{n}", n, parallel)
    with FaultProxy(upstreams=bed.endpoints()) as proxy:
        yaml = workdir / "clouds.yaml"
        proxy.write_clouds_yaml(
            dest=yaml, source=bed.clouds_yaml_path(), cloud=bed.USER_CLOUD, name="proxied"
        )
        cloud = ClusterCloud(bed.connect("proxied", config_file=yaml), cluster=inv.cluster.name)
        start = time.monotonic()
        try:
            workflows.up(inv, cloud=cloud, user_data=_user_data(inv), until="servers")
            up_s = time.monotonic() - start
            up_requests = proxy.total()
            proxy.reset_counts()
        finally:
            start_down = time.monotonic()
            workflows.down(inv, cloud=cloud)
        down_s = time.monotonic() - start_down
        return {
            "n": n,
            "up_requests": up_requests,
            "budget": n + 60,
            "up_s": up_s,
            "down_requests": proxy.total(),
            "down_s": down_s,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workers", nargs="*", type=int, default=[1, 10, 50])
    parser.add_argument("--parallel", type=int, default=10, help="max_parallel_creates")
    parser.add_argument("--log", type=Path, help="write the workflows' log here")
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(
            filename=args.log, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
        )
    if not bed.is_healthy():
        raise SystemExit("the test bed is not up: tests/testbed/controlplane/up.sh")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        print(f"{'1+N':>6} {'up req':>7} {'N+60':>5} {'up s':>6} {'down req':>9} {'down s':>7}")
        for n in args.workers:
            r = measure(n, parallel=args.parallel, workdir=Path(tmp))
            print(
                f"{'1+' + str(n):>6} {r['up_requests']:>7} {r['budget']:>5} "
                f"{r['up_s']:>6.1f} {r['down_requests']:>9} {r['down_s']:>7.1f}"
            )


if __name__ == "__main__":
    main()
