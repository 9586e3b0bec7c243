"""Wall time and API requests of `sparkstack up --until servers` and `down` for 1+N nodes,
against the simulated cloud of bench/simcloud.py, where every server boots in B seconds
whatever N is (a cloud with many hypervisors). Goal: T_up(1+300) / T_up(1+1) <= 1.15 at
B = 5 s, i.e. `up` is flat in N.

Each run is the real CLI as a whole process (`python -m provisioner.cli`, from this
checkout), with the inventory's defaults for everything the figure depends on
(max_parallel_creates, and the polling the CLI always uses), a generated keypair, and
config and state directories in a temporary directory. The sim is a simulation: these
numbers are the client's own cost and waits, not a real cloud's (see its docstring).

    python -m bench.flat_in_n                  # N = 1 10 100 300, B = 5 s
    python -m bench.flat_in_n 1 50 --boot 2    # N = 1 and 50, B = 2 s
    python -m bench.flat_in_n --quick          # N = 1, B = 0.5 s (what CI runs)
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

from bench.simcloud import SimCloud

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.15
# The test bed's names, which the sim knows too (SimCloud's defaults).
INVENTORY = """\
[cluster]
name = {name}
cloud = "sim"
image = "debian-12"

[network]
name = "private"
floating_ip_pool = "public"
allowed_cidrs = ["203.0.113.0/24"]

[master]
flavor = "m1.large"

[workers]
flavor = "m1.medium"
count = {count}

[spark]
# pinned, so preflight asks Apache's site for nothing
sha512 = "{sha512}"
"""


def _run(args: list[str], *, env: dict[str, str], log: Path) -> float:
    """Run the CLI to the end; its wall time. Its output goes to `log`."""
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "provisioner.cli", *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            check=False,
        )  # fmt: skip
    took = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"sparkstack {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return took


def measure_one(n: int, *, boot_s: float, workdir: Path) -> dict[str, Any]:
    """One cluster of 1+n on a fresh sim: up --until servers, then down."""
    workdir.mkdir(parents=True, exist_ok=True)
    inv = workdir / "inventory.toml"
    inv.write_text(INVENTORY.format(name=json.dumps(f"flat-{n}"), count=n, sha512="0" * 128))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "SPARKSTACK_"))}
    env |= {"XDG_CONFIG_HOME": str(workdir / "config"), "XDG_STATE_HOME": str(workdir / "state"),
            "OS_CLIENT_CONFIG_FILE": str(workdir / "clouds.yaml"), "NO_COLOR": "1",
            # servers that never boot: no hub, no homes for `down` to save
            "SPARKSTACK_NO_BACKUP": "1"}  # fmt: skip
    with SimCloud(boot_s=boot_s) as sim:
        sim.write_clouds_yaml(workdir / "clouds.yaml", name="sim")
        up_s = _run(["up", "-i", str(inv), "--until", "servers"], env=env, log=workdir / "up.log")
        up_requests, up_counts = sim.total(), sim.counts()
        servers_up = sim.server_count()
        sim.reset_counts()
        down_s = _run(["down", "-i", str(inv), "--yes"], env=env, log=workdir / "down.log")
        return {
            "n": n, "boot_s": boot_s, "up_s": round(up_s, 2), "down_s": round(down_s, 2),
            "up_requests": up_requests, "down_requests": sim.total(),
            "servers_after_up": servers_up, "servers_after_down": sim.server_count(),
            "up_posts": sum(c for (_, m, _p), c in up_counts.items() if m == "POST"),
            "up_server_lists": sum(c for (_, m, p), c in up_counts.items()
                                   if m == "GET" and p == "/v2.1/servers/detail"),
            "unknown": list(sim.unknown), "ignored_filters": sorted(sim.ignored),
            "sim_errors": list(sim.errors),
        }  # fmt: skip


def measure(
    ns: list[int], boot_s: float, *, keep: Path | None = None, rounds: int = 1
) -> list[dict[str, Any]]:
    """Rows for 1 and every N in `ns`, each with ratio_up = T_up(1+N) / T_up(1+1). With
    rounds > 1 every N runs once per round (N = 1, 10, ... then again), and each row
    holds the medians. The runs' inventories and logs go to `keep` when given, else to a
    temporary directory."""
    ns = sorted({1, *ns})
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in ns}
    with tempfile.TemporaryDirectory(prefix="flat-in-n-") as tmp:
        top = keep or Path(tmp)
        for r in range(rounds):
            for n in ns:
                runs[n].append(measure_one(n, boot_s=boot_s, workdir=top / f"n{n}r{r}"))
    rows = []
    for n in ns:
        row = dict(runs[n][0])
        for key in ("up_s", "down_s"):
            row[key] = round(statistics.median(x[key] for x in runs[n]), 2)
            row[f"{key}_samples"] = [x[key] for x in runs[n]]
        rows.append(row)
    base = rows[0]["up_s"]
    for row in rows:
        row["ratio_up"] = round(row["up_s"] / base, 3)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'1+N':>6} {'up s':>7} {'down s':>7} {'up req':>7} {'down req':>8} "
            f"{'POSTs':>6} {'lists':>6} {'T/T(1+1)':>9}")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(f"{'1+' + str(r['n']):>6} {r['up_s']:>7.2f} {r['down_s']:>7.2f} "
                     f"{r['up_requests']:>7} {r['down_requests']:>8} {r['up_posts']:>6} "
                     f"{r['up_server_lists']:>6} {r['ratio_up']:>9.3f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workers", nargs="*", type=int, default=[1, 10, 100, 300])
    parser.add_argument("--boot", type=float, default=5.0, help="B: seconds a server boots")
    parser.add_argument("--quick", action="store_true", help="N = 1 only, B = 0.5 s")
    parser.add_argument("--json", type=Path, help="also write the rows here, as JSON")
    parser.add_argument("--keep", type=Path, help="keep each run's inventory and logs here")
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many runs")
    args = parser.parse_args(argv)
    ns, boot = ([1], 0.5) if args.quick else (args.workers, args.boot)
    rows = measure(ns, boot, keep=args.keep, rounds=1 if args.quick else args.rounds)
    print(f"simulated cloud, every server ACTIVE {boot:g} s after its POST")
    print(table(rows))
    last = rows[-1]
    if last["n"] > 1:
        verdict = "flat" if last["ratio_up"] <= GOAL else "NOT flat"
        print(f"T_up(1+{last['n']}) / T_up(1+1) = {last['ratio_up']:.3f} "
              f"(goal <= {GOAL}): {verdict}")  # fmt: skip
    for row in rows:
        if row["unknown"] or row["ignored_filters"] or row["sim_errors"]:
            print(f"1+{row['n']}: unknown requests {row['unknown']}, filters the sim "
                  f"ignored {row['ignored_filters']}, sim errors {row['sim_errors']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bench": "flat_in_n", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
