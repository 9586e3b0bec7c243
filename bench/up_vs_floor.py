"""`sparkstack up`/`down` against the cloud's floor (bench/floor.py), side by side on the
local OpenStack test bed, both as whole processes.

For each 1+N: ROUNDS rounds, the order of the contenders rotated every round so none
always runs on a warmer cloud; the medians give the ratios. With `--baseline REV` the
sparkstack of that git revision runs in the same rounds (from `git archive`, so this tree
and its git state are untouched): before and after, measured side by side. Then one
counted pass of floor and sparkstack through the test bed's counting proxy (requests per
service and path), and, once, the loop a user would write with openstacksdk
(`create_server(wait=True)` per server).

    python -m bench.up_vs_floor 1 10 30 [--rounds 3] [--baseline main] [--no-naive]
                                        [--json out.json]
    python -m bench.up_vs_floor --quick        # N = 1, one round: proves it still works
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.testbed import bed
from tests.testbed.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
# goals of the speed issue, printed next to each figure
GOAL_RATIO = 1.10
GOAL_SLACK_S = 0.5  # T <= GOAL_RATIO x floor + GOAL_SLACK_S: fixed costs weigh most at 1+1
GOAL_UP_REQUESTS = 45


def goal_s(floor_s: float) -> float:
    return GOAL_RATIO * floor_s + GOAL_SLACK_S


def baseline_tree(rev: str, dest: Path) -> Path:
    """The files of git revision `rev` in `dest`, to run its sparkstack beside this one's."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _inventory(path: Path, name: str, workers: int, cloud: str) -> Path:
    # anti_affinity "soft": a server group, as the floor makes one; a pinned sha512 keeps
    # preflight off Apache's site (nothing boots on the cloud-only bed)
    path.write_text(
        "\n".join(
            [
                "[cluster]", f'name = "{name}"', f'cloud = "{cloud}"', 'image = "debian-12"',
                "[network]", 'name = "private"', 'floating_ip_pool = "public"',
                'allowed_cidrs = ["203.0.113.0/24"]',
                "[master]", 'flavor = "m1.tiny"',
                "[workers]", 'flavor = "m1.tiny"', f"count = {workers}",
                'anti_affinity = "soft"',
                "[spark]", f'sha512 = "{"ab" * 64}"',
            ]
        )
        + "\n"
    )
    return path


class Bench:
    def __init__(
        self, workdir: Path, clouds_yaml: Path, cloud: str, baseline: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.baseline = baseline
        self.env = dict(os.environ)
        self.env.update(
            OS_CLIENT_CONFIG_FILE=str(clouds_yaml),
            XDG_CONFIG_HOME=str(workdir / "config"),
            XDG_STATE_HOME=str(workdir / "state"),
            # `down` is timed against deleting the servers alone: no homes to save
            SPARKSTACK_NO_BACKUP="1",
        )
        self.env.pop("OS_CLOUD", None)
        self.cloud = cloud
        key = workdir / "floor_key"
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        self.public_key = key.with_suffix(".pub").read_text().strip()

    def _timed(self, argv: list[str], what: str, tree: Path = ROOT) -> float:
        env = dict(self.env, PYTHONPATH=str(tree))  # that tree's provisioner, no other
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True
        )
        took = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{what}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return took

    def floor_create(self, n: int, name: str) -> float:
        return self._timed(
            ["-m", "bench.floor", "create", "--cloud", self.cloud, "--name", name,
             "--workers", str(n), "--public-key", self.public_key],
            f"floor create 1+{n}",
        )

    def floor_delete(self, n: int, name: str) -> float:
        return self._timed(
            ["-m", "bench.floor", "delete", "--cloud", self.cloud, "--name", name],
            f"floor delete 1+{n}",
        )

    def up(self, n: int, name: str, tree: Path = ROOT) -> float:
        inv = _inventory(self.workdir / f"{name}.toml", name, n, self.cloud)
        return self._timed(
            ["-m", "provisioner.cli", "up", "-i", str(inv), "--until", "servers"],
            f"up 1+{n}", tree,
        )

    def down(self, n: int, name: str, tree: Path = ROOT) -> float:
        inv = self.workdir / f"{name}.toml"
        return self._timed(["-m", "provisioner.cli", "down", "-i", str(inv), "--yes"],
                           f"down 1+{n}", tree)

    def before_up(self, n: int, name: str) -> float:
        assert self.baseline is not None
        return self.up(n, name, self.baseline)

    def before_down(self, n: int, name: str) -> float:
        assert self.baseline is not None
        return self.down(n, name, self.baseline)

    def naive_create(self, n: int, name: str) -> float:
        return self._timed(
            ["-m", "bench.naive", "create", "--cloud", self.cloud, "--name", name,
             "--workers", str(n), "--public-key", self.public_key],
            f"naive create 1+{n}",
        )

    def naive_delete(self, n: int, name: str) -> float:
        return self._timed(
            ["-m", "bench.naive", "delete", "--cloud", self.cloud, "--name", name],
            f"naive delete 1+{n}",
        )

    def pair(self, who: str, n: int, name: str) -> tuple[float, float]:
        """Create then delete (always, so a failed create leaves nothing behind)."""
        create, delete = {
            "floor": (self.floor_create, self.floor_delete),
            "up": (self.up, self.down),
            "naive": (self.naive_create, self.naive_delete),
            "before": (self.before_up, self.before_down),
        }[who]
        try:
            made = create(n, name)
        finally:
            gone = delete(n, name)
        return made, gone


def _by_path(proxy: FaultProxy) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, count in proxy.counts().items():
        label = f"{key.service} {key.method} {key.path}"
        out[label] = out.get(label, 0) + count
    return dict(sorted(out.items()))


def counted(n: int, workdir: Path) -> dict[str, Any]:
    """One create and delete of each through the counting proxy: what the cloud saw."""
    out: dict[str, Any] = {}
    with FaultProxy(upstreams=bed.endpoints()) as proxy:
        yaml = workdir / "proxied-clouds.yaml"
        proxy.write_clouds_yaml(
            dest=yaml, source=bed.clouds_yaml_path(), cloud=bed.USER_CLOUD, name="proxied"
        )
        b = Bench(workdir, yaml, "proxied")

        def count(label: str, step) -> None:
            proxy.reset_counts()
            try:
                step()
            finally:
                out[f"{label}_requests"] = proxy.total()
                out[f"{label}_paths"] = _by_path(proxy)

        for who, (make, label_make), (remove, label_remove) in (
            ("floor", (b.floor_create, "floor"), (b.floor_delete, "floor_delete")),
            ("up", (b.up, "up"), (b.down, "down")),
        ):
            name = f"bc{who[0]}{n}"
            try:
                count(label_make, lambda make=make, name=name: make(n, name))
            finally:
                count(label_remove, lambda remove=remove, name=name: remove(n, name))
    return out


# where each contender's create and delete times go
KEYS = {"floor": ("floor_up", "floor_down"), "up": ("up", "down"),
        "before": ("before_up", "before_down")}


def measure(
    n: int, *, rounds: int, naive: bool, workdir: Path, baseline: Path | None = None
) -> dict[str, Any]:
    b = Bench(workdir, bed.clouds_yaml_path(), bed.USER_CLOUD, baseline)
    who_runs = ["floor", "up"] + (["before"] if baseline else [])
    times: dict[str, list[float]] = {k: [] for w in who_runs for k in KEYS[w]}
    for r in range(rounds):
        order = who_runs[r % len(who_runs):] + who_runs[: r % len(who_runs)]
        if r % 2:
            order.reverse()
        for who in order:
            u, d = b.pair(who, n, f"b{who[0]}{n}r{r}")
            times[KEYS[who][0]].append(u)
            times[KEYS[who][1]].append(d)
            print(f"  1+{n} round {r + 1} {who}: create {u:.1f} s, delete {d:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    row: dict[str, Any] = {
        "n": n,
        "rounds": rounds,
        **{f"{k}_s": round(v, 2) for k, v in med.items()},
        "up_ratio": round(med["up"] / med["floor_up"], 3),
        "down_ratio": round(med["down"] / med["floor_down"], 3),
        "up_goal_s": round(goal_s(med["floor_up"]), 2),
        "down_goal_s": round(goal_s(med["floor_down"]), 2),
        "samples": times,
    }
    if baseline:
        row["before_up_ratio"] = round(med["before_up"] / med["floor_up"], 3)
        row["before_down_ratio"] = round(med["before_down"] / med["floor_down"], 3)
    row.update(counted(n, workdir))
    if naive:
        nu, nd = b.pair("naive", n, f"bn{n}")
        row["naive_up_s"], row["naive_down_s"] = round(nu, 2), round(nd, 2)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'1+N':>5} {'floor':>6} {'up':>6} {'ratio':>6} {'floor del':>9} {'down':>6} "
        f"{'ratio':>6} {'requests floor/up':>17} {'floor del/down':>14} {'naive':>6}"
    )
    lines = [head]
    for r in rows:
        req = f"{r.get('floor_requests', '-')}/{r.get('up_requests', '-')}"
        dreq = f"{r.get('floor_delete_requests', '-')}/{r.get('down_requests', '-')}"
        naive = f"{r['naive_up_s']:.1f}" if "naive_up_s" in r else "-"
        lines.append(
            f"{'1+' + str(r['n']):>5} {r['floor_up_s']:>6.1f} {r['up_s']:>6.1f} "
            f"{r['up_ratio']:>6.2f} {r['floor_down_s']:>9.1f} {r['down_s']:>6.1f} "
            f"{r['down_ratio']:>6.2f} {req:>17} {dreq:>14} {naive:>6}"
        )
    lines.append(
        f"goals: ratios <= {GOAL_RATIO}, up requests <= {GOAL_UP_REQUESTS}, "
        "down requests <= N + 15"
    )
    if any("before_up_s" in r for r in rows):
        lines += ["", before_after(rows)]
    return "\n".join(lines)


def before_after(rows: list[dict[str, Any]]) -> str:
    """The baseline revision's sparkstack and this one's, against the floor of the same
    rounds and the goal: at most GOAL_RATIO x floor + GOAL_SLACK_S."""
    lines = [
        f"{'':>5} {'--- up':<33} {'--- down':<33}",
        f"{'1+N':>5}" + f" {'floor':>6} {'before':>6} {'after':>6} {'goal':>6} {'met':>4}" * 2,
    ]
    for r in rows:
        if "before_up_s" not in r:
            continue
        cells = ""
        for kind, floor in (("up", "floor_up"), ("down", "floor_down")):
            goal = goal_s(r[f"{floor}_s"])
            met = "yes" if r[f"{kind}_s"] <= goal else "no"
            cells += (
                f" {r[f'{floor}_s']:>6.2f} {r[f'before_{kind}_s']:>6.2f} {r[f'{kind}_s']:>6.2f}"
                f" {goal:>6.2f} {met:>4}"
            )
        lines.append(f"{'1+' + str(r['n']):>5}{cells}")
    lines.append(f"goal: <= {GOAL_RATIO} x floor + {GOAL_SLACK_S} s (medians of the same rounds)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workers", nargs="*", type=int, default=[1, 10, 30])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-naive", action="store_true", help="skip the openstacksdk loop")
    p.add_argument("--quick", action="store_true", help="N = 1, one round, no naive loop")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--paths", action="store_true", help="print requests per path")
    p.add_argument("--baseline", metavar="REV", help="also run the sparkstack of this git revision")
    a = p.parse_args(argv)
    if a.quick:
        a.workers, a.rounds, a.no_naive = [1], 1, True
    if not bed.is_healthy():
        print("the test bed is not up: tests/testbed/controlplane/up.sh", file=sys.stderr)
        return 1
    rows = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = None
        if a.baseline:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", a.baseline], cwd=ROOT, check=True,
                capture_output=True, text=True,
            ).stdout.strip()
            baseline = baseline_tree(commit, Path(tmp) / "baseline")
            extra["baseline"] = f"{a.baseline} ({commit})"
        for n in a.workers:
            rows.append(
                measure(n, rounds=a.rounds, naive=not a.no_naive, workdir=Path(tmp),
                        baseline=baseline)
            )
    print(table(rows))
    if a.paths:
        for r in rows:
            for kind in ("floor", "up", "floor_delete", "down"):
                print(f"\n1+{r['n']} {kind}: {r[f'{kind}_requests']} requests")
                for path, count in r[f"{kind}_paths"].items():
                    print(f"  {count:>4}  {path}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"bench": "up_vs_floor", **extra, "rows": rows}
        a.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
