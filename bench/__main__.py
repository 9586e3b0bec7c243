"""`python -m bench report` prints the latest measured tables (bench/results/*.json);
`python -m bench run` measures everything again and writes them; `python -m bench quick`
runs every bench in its quick mode, which proves it still works, not how fast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BENCHES = {
    # name: (module, full-run arguments, quick arguments or None when it needs the hosts bed)
    "up_vs_floor": ("bench.up_vs_floor", ["1", "10", "30"], ["--quick"]),
    "flat_in_n": ("bench.flat_in_n", [], ["--quick"]),
    "phases": ("bench.phases", ["--image", "both"], None),
}


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores {platform.machine()}, {mem:.0f} GiB, {platform.system()}"


def _stamp(path: Path) -> None:
    data = json.loads(path.read_text())
    data.update(date=date.today().isoformat(), machine=machine())
    path.write_text(json.dumps(data, indent=1) + "\n")


def run(names: list[str], quick: bool) -> int:
    failed = 0
    for name in names:
        module, full, fast = BENCHES[name]
        if quick and fast is None:
            print(f"--- {name}: no quick mode (needs the hosts bed); skipped")
            continue
        out = RESULTS / f"{name}.json"
        args = fast if quick else [*full, "--json", str(out)]
        print(f"--- {name}: python -m {module} {' '.join(args)}", flush=True)
        code = subprocess.call([sys.executable, "-m", module, *args])
        if code:
            failed += 1
            print(f"--- {name}: exit {code}")
        elif not quick:
            _stamp(out)
    return 1 if failed else 0


def report() -> int:
    from bench import flat_in_n, up_vs_floor

    shown = 0
    for name in BENCHES:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            print(f"{name}: not measured yet (python -m bench run {name})\n")
            continue
        data = json.loads(path.read_text())
        print(f"{name} — {data.get('date', '?')}, {data.get('machine', '?')}")
        rows = data["rows"]
        if name == "up_vs_floor":
            print(up_vs_floor.table(rows))
        elif name == "flat_in_n":
            print(flat_in_n.table(rows))
        else:
            for row in rows:
                for key, value in row.items():
                    print(f"  {key:<20} {value}")
        print()
        shown += 1
    return 0 if shown else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("report", help="print the latest tables")
    for verb in ("run", "quick"):
        sp = sub.add_parser(verb)
        sp.add_argument("names", nargs="*", help=f"some of: {', '.join(BENCHES)} (default all)")
    a = p.parse_args(argv)
    if a.what == "report":
        return report()
    unknown = [n for n in a.names if n not in BENCHES]
    if unknown:
        p.error(f"unknown bench {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    return run(a.names or list(BENCHES), quick=a.what == "quick")


if __name__ == "__main__":
    sys.exit(main())
