"""Time to a usable cluster on the hosts bed: `sparkstack up` of 1+2 from the test bed's
inventory (servers that really boot cloud-init, download and check Spark, start the
daemons; the hub installed over SSH), then `sparkstack smoke` for the first kernel.

Each phase is read from the run's own log (millisecond timestamps) as the moment the
last node reached it, counted from the start of `up`:

    servers ACTIVE      every server ACTIVE and the floating IP attached
    SSH ready           every node answered a login
    cloud-init done     every node's boot reported ready
    workers registered  every worker ALIVE on the Spark master
    hub ready           the hub answers over HTTPS
    first kernel ready  after `up`, smoke's "PySpark kernel starts" check: the kernel
                        answering its first cell
    first cell          after `up`, smoke's first job answered (the kernel started, its
                        SparkContext up, executors on the workers, the answer back)

    python -m bench.phases [--image prebaked|stock|baked|both|all] [--json out.json]

`--image stock` boots the bed's stock Debian 12 image (no Java, venv, Node.js or Spark)
with tests/testbed/inventory.stock.toml, whose nodes install everything at boot through
the bed's mirrors; `--image baked` first bakes an image from that stock image with
`sparkstack image build` (timed, then deleted at the end) and boots the cluster from it;
`both` runs pre-baked and stock side by side for the ratio, `all` the three. For
a stock run, where the boot's time goes is read from each node's own log (the bootstrap
says how long each step took): apt (base, java), pip (python), npm (proxy), Spark.

Needs the OpenStack bed and the hosts bed (started here when they are not up, and then
stopped again). Spark comes from the bed's local mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.testbed import bed
from tests.testbed.hosts import hostbed

ROOT = Path(__file__).resolve().parents[1]
INVENTORIES = {
    "prebaked": ROOT / "tests" / "testbed" / "inventory.testbed.toml",
    "stock": ROOT / "tests" / "testbed" / "inventory.stock.toml",
    "baked": ROOT / "tests" / "testbed" / "inventory.stock.toml",
}
BAKED_IMAGE = "benchphases-baked"
NAME = "benchphases"
# "sparkstack[python]: done in 41 s" in a node's boot log.
STEP_DONE = re.compile(r"^sparkstack\[(\w+)\]: done in (\d+) s$", re.MULTILINE)

# (phase, pattern of the log line; "{n}" = every node must show it)
MARKS = [
    ("servers ACTIVE", r"every server is ACTIVE and the floating IP is attached"),
    ("SSH ready", r"{n}: connected$"),
    ("cloud-init done", r"{n}: ready$"),
    ("workers registered", r"every worker is ALIVE on the Spark master"),
    ("hub ready", r"hub ready at "),
]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+ \[[^\]]*\] (.*)$")


def _when(line: str) -> tuple[float, str] | None:
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2)


def phases_from_log(log: Path, nodes: list[str]) -> dict[str, float]:
    """Seconds from the `sparkstack up` line to each phase (last node), from one log."""
    lines = [w for w in map(_when, log.read_text().splitlines()) if w]
    start = next(t for t, text in lines if text.startswith("sparkstack up "))
    out: dict[str, float] = {}
    for phase, pattern in MARKS:
        if "{n}" in pattern:
            seen = []
            for node in nodes:
                rx = re.compile(pattern.replace("{n}", re.escape(node)))
                hit = next((t for t, text in lines if t >= start and rx.search(text)), None)
                seen.append(hit)
            if all(seen):
                out[phase] = round(max(seen) - start, 1)  # type: ignore[type-var]
        else:
            rx = re.compile(pattern)
            hit = next((t for t, text in lines if t >= start and rx.search(text)), None)
            if hit is not None:
                out[phase] = round(hit - start, 1)
    return out


def boot_steps() -> dict[str, dict[str, int]]:
    """Seconds of each bootstrap step, by role (the slowest node of the role), from the
    booted hosts' own logs: read before `down` takes the hosts away."""
    from tests.testbed.hosts import hosts

    out: dict[str, dict[str, int]] = {}
    for host in hosts.list_hosts():
        if not host.name.startswith(f"{NAME}-"):
            continue
        role = "master" if host.name.endswith("-master") else "worker"
        try:
            log = host.file("/var/log/cloud-init-output.log").read_text(errors="replace")
        except OSError:
            continue
        steps = out.setdefault(role, {})
        for step, secs in STEP_DONE.findall(log):
            steps[step] = max(steps.get(step, 0), int(secs))
    return out


def run(workdir: Path, image: str = "prebaked") -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        OS_CLIENT_CONFIG_FILE=str(bed.clouds_yaml_path()),
        XDG_CONFIG_HOME=str(workdir / "config"),
        XDG_STATE_HOME=str(workdir / "state"),
        SPARKSTACK_CLUSTER_NAME=NAME,
    )
    env.pop("OS_CLOUD", None)
    cli = [sys.executable, "-m", "provisioner.cli"]
    inv_path = INVENTORIES[image]
    if image == "baked":
        inv_path = workdir / "baked.toml"
        inv_path.write_text(re.sub(r'(?m)^image = ".*"$', f'image = "{BAKED_IMAGE}"',
                                   INVENTORIES["stock"].read_text()))  # fmt: skip
    inv = ["-i", str(inv_path)]

    def sparkstack(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args, *inv], cwd=ROOT, env=env, capture_output=True,
                              text=True)  # fmt: skip

    row: dict[str, Any] = {"n": 2, "image": image, "spark": "tarball from the bed's mirror"}
    if image == "baked":
        _delete_image(BAKED_IMAGE)
        start = time.monotonic()
        stock = re.search(r'(?m)^image = "(.*)"$', INVENTORIES["stock"].read_text())
        assert stock is not None
        built = sparkstack("image", "build", "--from", stock.group(1), "--name", BAKED_IMAGE,
                           "--json")  # fmt: skip
        if built.returncode != 0:
            raise RuntimeError(f"image build failed ({built.returncode}):\n{built.stderr[-3000:]}")
        row["image build"] = json.loads(built.stdout)["seconds"]
        row["spark"] = "in the image"
    start = time.monotonic()
    try:
        up = sparkstack("up")
        row["up_s"] = round(time.monotonic() - start, 1)
        if up.returncode != 0:
            raise RuntimeError(f"up failed ({up.returncode}):\n{up.stdout[-3000:]}\n{up.stderr}")
        smoke_start = time.monotonic()
        smoke = sparkstack("smoke", "--json")
        if smoke.returncode != 0:
            raise RuntimeError(f"smoke failed ({smoke.returncode}):\n{smoke.stdout[-3000:]}")
        report = json.loads(smoke.stdout)
        kernel = next(c for c in report["checks"] if c["name"].startswith("PySpark kernel"))
        # the kernel check's own end, measured from the start of `up`
        checks_before = [c["seconds"] for c in report["checks"][: report["checks"].index(kernel)]]
        row["first kernel ready"] = round(
            smoke_start - start + sum(checks_before) + kernel["seconds"], 1
        )
        job = report["checks"][report["checks"].index(kernel) + 1]
        row["first cell"] = round(row["first kernel ready"] + job["seconds"], 1)
        # the user's wait from asking for a kernel to the first answer
        row["kernel to first answer"] = round(kernel["seconds"] + job["seconds"], 1)
        row["smoke_s"] = round(time.monotonic() - smoke_start, 1)
        row["boot steps"] = boot_steps()
    finally:
        down = sparkstack("down", "--yes")
        row["down_ok"] = down.returncode == 0
        if image == "baked":
            _delete_image(BAKED_IMAGE)
    nodes = [f"{NAME}-master", f"{NAME}-worker-1", f"{NAME}-worker-2"]
    row.update(phases_from_log(workdir / "state" / "sparkstack" / NAME / "sparkstack.log", nodes))
    return row


def _delete_image(name: str) -> None:
    conn = bed.connect(bed.USER_CLOUD, config_file=bed.clouds_yaml_path())
    for image in conn.image.images(name=name):
        conn.image.delete_image(image.id, ignore_missing=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--image", choices=["prebaked", "stock", "baked", "both", "all"],
                   default="prebaked")  # fmt: skip
    a = p.parse_args(argv)
    images = {"both": ["prebaked", "stock"], "all": ["prebaked", "stock", "baked"]}.get(
        a.image, [a.image])
    if not bed.is_healthy():
        print("the test bed is not up: tests/testbed/controlplane/up.sh", file=sys.stderr)
        return 1
    was_up = hostbed.is_up()
    hostbed.up()
    try:
        rows = []
        for image in images:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run(Path(tmp), image))
    finally:
        if not was_up:
            hostbed.down()
    order = ["servers ACTIVE", "SSH ready", "cloud-init done", "hub ready",
             "workers registered", "first kernel ready", "first cell",
             "kernel to first answer"]  # fmt: skip
    for row in rows:
        print(f"1+2 on the hosts bed, {row['image']} image, Spark: {row['spark']}")
        for phase in order:
            print(f"  {phase:<20} {row.get(phase, '-'):>6} s")
        print(f"  (up {row['up_s']} s, smoke {row.get('smoke_s', '-')} s)")
        if "image build" in row:
            took = row["image build"].items()
            print("  image build: " + ", ".join(f"{k} {v} s" for k, v in took))
        for role, steps in sorted(row.get("boot steps", {}).items()):
            print(f"  {role} boot steps: " + ", ".join(f"{k} {v} s" for k, v in steps.items()))
    if len(rows) == 2 and all("first kernel ready" in r for r in rows):
        ratio = rows[1]["first kernel ready"] / rows[0]["first kernel ready"]
        print(f"first kernel, stock / pre-baked: {ratio:.2f} (goal <= 2)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"bench": "phases", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
