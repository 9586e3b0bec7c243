"""Progress in a log (not a terminal): a line per node change, one line per state when
many nodes change at once, so a 300-worker cluster does not print 600 lines."""

from __future__ import annotations

import io

from rich.console import Console

from provisioner.progress import GROUP_ABOVE, LiveProgress


def lines(out: io.StringIO) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines() if line.strip()]


def test_few_changes_get_a_line_each_and_many_one_line_per_state():
    out = io.StringIO()
    many = [f"c-worker-{i}" for i in range(1, GROUP_ABOVE + 3)]
    with LiveProgress(Console(file=out, force_terminal=False, width=200), title="t") as p:
        p.nodes({"c-master": "BUILD", "c-worker-1": "BUILD"})
        assert lines(out) == ["c-master: BUILD", "c-worker-1: BUILD"]
        out.truncate(0), out.seek(0)
        p.nodes({"c-master": "ACTIVE", **dict.fromkeys(many, "ACTIVE")})
        assert lines(out) == [
            f"{len(many) + 1} nodes: ACTIVE (c-master ... {many[-1]})",
        ]


def test_a_result_with_many_servers_folds_them_into_one_line():
    from provisioner.commands.output import SUMMARISE_ABOVE, summarised

    few = ["security group sg", "server c-master", "server c-worker-1"]
    assert summarised(few) == few
    many = [f"server c-worker-{i}" for i in range(1, SUMMARISE_ABOVE + 3)]
    assert summarised(["keypair k", *many]) == [
        f"{len(many)} servers (c-worker-1 ... {many[-1].split()[1]})",
        "keypair k",
    ]
