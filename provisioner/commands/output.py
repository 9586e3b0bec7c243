"""How cluster commands print: the node table, the plan, JSON, and live progress.

Progress goes to stderr (live on a terminal), results to stdout (a table, or JSON with
--json), details to the log file of the command.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from provisioner import plan as P
from provisioner.render import MAX_USER_DATA_BASE64
from provisioner.workflows import Reporter, Result, refusal

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.inventory import Inventory
    from provisioner.workflows.hub_stage import HubOutcome


def age(created: str) -> str:
    if not created:
        return ""
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    secs = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def nodes_table(observed: P.Observed) -> Group:
    """The nodes as a table that fits 80 columns; Nova's fault texts follow it, unwrapped."""
    table = Table(
        title=f"cluster {observed.cluster}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("name", "role", "state", "fixed IP", "floating IP", "flavor", "age"):
        table.add_column(col, no_wrap=True)
    nodes = sorted(observed.nodes, key=lambda n: (n.role != P.MASTER, n.index))
    for n in nodes:
        table.add_row(n.name, n.role, n.status, n.fixed_ip, n.floating_ip, n.flavor, age(n.created))
    faults = [Text(f"{n.name}: {n.fault}") for n in nodes if n.fault]
    return Group(table, *faults)


def spark_table(observed: P.Observed, spark: dict[str, dict[str, Any]]) -> Table:
    """Each node's Spark state as the master sees it: cores and memory in use of what the
    worker offers."""
    table = Table(title="spark", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)  # fmt: skip
    for col in ("name", "spark", "cores used", "memory used"):
        table.add_column(col, no_wrap=True)
    for n in sorted(observed.nodes, key=lambda n: (n.role != P.MASTER, n.index)):
        s = spark.get(n.name) or {}
        cores = f"{s['cores_used']}/{s['cores']}" if s.get("cores") is not None else ""
        mem = (f"{s['memory_used_mb'] / 1024:.1f}/{s['memory_mb'] / 1024:.1f} GiB"
               if s.get("memory_mb") is not None else "")  # fmt: skip
        table.add_row(n.name, s.get("state", ""), cores, mem)
    return table


def print_plan(out: Console, res: Result, *, sources: Sequence[tuple[str, str]] = ()) -> None:
    out.print("plan:", highlight=False)
    out.print(escape(P.describe(res.actions)), highlight=False, soft_wrap=True)
    if sources:
        out.print(escape("new nodes fetch from ([mirrors]):"), highlight=False)
        for what, where in sources:
            out.print(f"  {escape(what)}: {escape(where)}", highlight=False, soft_wrap=True)
    for role, size in res.user_data_sizes.items():
        share = 100 * size / MAX_USER_DATA_BASE64
        out.print(
            f"user_data {role}: {size} bytes in base64, {share:.0f}% of Nova's "
            f"{MAX_USER_DATA_BASE64}",
            highlight=False,
        )
    for line in res.notes:
        out.print(escape(line), highlight=False, soft_wrap=True)
    if res.problems:
        out.print("[red]preflight problems:[/]")
        for p in res.problems:
            out.print(f"  - {escape(p)}", highlight=False, soft_wrap=True)


def on_terminal(out: Console) -> bool:
    """Whether `out` writes to a terminal, where a secret may be shown. The file's own
    answer, not rich's is_terminal, which FORCE_COLOR or TTY_COMPATIBLE (often set in CI
    for colours) turn true on a pipe."""
    isatty = getattr(out.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed
        return False


def print_hub(out: Console, inv: Inventory, outcome: HubOutcome) -> None:
    """The hub's closing lines: where it is, its certificate, and how users log in."""
    out.print(f"hub: {outcome.url}", highlight=False)
    out.print(f"  certificate SHA256 {outcome.fingerprint}", highlight=False, soft_wrap=True)
    if outcome.ca_file is not None:
        ca = escape(str(outcome.ca_file))
        out.print(f"  certificate authority to trust once: {ca}", highlight=False,
                  soft_wrap=True)  # fmt: skip
        out.print(f"    browsers: import it as an authority; Python: REQUESTS_CA_BUNDLE={ca};"
                  f" curl --cacert {ca}", highlight=False, soft_wrap=True)  # fmt: skip
    admins = [a for a in inv.jupyterhub.admins if a in outcome.new_passwords]
    for name in admins[:1]:
        # printed once, when the account is made, and only to a terminal (never into a CI
        # log or a file); kept in the 0600 file
        if on_terminal(out):
            out.print(f"  admin {name}, initial password: {outcome.new_passwords[name]}",
                      highlight=False)  # fmt: skip
        else:
            out.print(f"  admin {name}: initial password in {escape(str(outcome.credentials))}"
                      " (printed only on a terminal)", highlight=False, soft_wrap=True)  # fmt: skip
    if outcome.sso_callback is None:
        out.print(f"  every user's initial password: {outcome.credentials}", highlight=False)
    else:
        oidc = inv.jupyterhub.oidc
        out.print(f"  people sign in through {escape(str(oidc.issuer))} (client "
                  f"{escape(str(oidc.client_id))})", highlight=False, soft_wrap=True)
        out.print(f"    redirect URI to register at the provider: {outcome.sso_callback}",
                  highlight=False, soft_wrap=True)  # fmt: skip
    # the hub's own service (hub/services.py): behind its login, for admins
    out.print(f"  Spark master and worker UIs (admins): {outcome.url.rstrip('/')}/services/spark/",
              highlight=False, soft_wrap=True)  # fmt: skip


def hub_json(outcome: HubOutcome) -> dict[str, Any]:
    return {
        "url": outcome.url,
        "certificate_sha256": outcome.fingerprint,
        "changed": outcome.changed,
        "credentials_file": str(outcome.credentials),
        "ca_file": str(outcome.ca_file) if outcome.ca_file else None,
        "oauth_callback": outcome.sso_callback,
    }


def print_done(out: Console, verb: str, lines: list[str]) -> None:
    """What a run created (or deleted), one line each; many servers folded into one."""
    for line in summarised(lines):
        out.print(f"{verb} {escape(line)}", highlight=False)


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def result_json(name: str, res: Result, *, dry_run: bool) -> dict[str, Any]:
    return {
        "cluster": name,
        "dry_run": dry_run,
        "plan": P.to_json(res.actions),
        "problems": res.problems,
        "created": res.created,
        "deleted": res.deleted,
        "changed": res.changed,
        "notes": res.notes,
        "user_data_bytes": res.user_data_sizes,
        "nodes": [n.to_json() for n in res.observed.nodes] if res.observed else [],
    }


def fetch_sources(inv: Inventory) -> list[tuple[str, str]]:
    """Where a new node fetches each kind of package from, for the dry run."""
    return inv.mirrors.sources(spark_url=inv.spark.tarball_url())


def show_dry_run(out: Console, name: str, res: Result, *, as_json: bool,
                 sources: Sequence[tuple[str, str]] = ()) -> None:  # fmt: skip
    """Print the plan (or its JSON); a plan with problems still ends in the refusal, exit 2.
    ``sources``: where new nodes fetch their packages from (what, where)."""
    if as_json:
        emit_json({**result_json(name, res, dry_run=True), "fetch_from": dict(sources)})
    else:
        print_plan(out, res, sources=sources)
    if res.problems:
        raise refusal(res.problems, name)


@contextlib.contextmanager
def progress(err: Console, title: str, *, quiet: bool) -> Iterator[Reporter]:
    if quiet:
        yield Reporter()
        return
    from provisioner.progress import LiveProgress

    with LiveProgress(err, title=title) as live:
        yield live


SUMMARISE_ABOVE = 8  # more servers than this in a result: one line for them


def summarised(lines: list[str]) -> list[str]:
    """A result's lines with many "server X" entries folded into one (a 300-worker
    cluster's result stays readable; the node table and --json still list every one)."""
    servers = [line for line in lines if line.startswith("server ")]
    if len(servers) <= SUMMARISE_ABOVE:
        return lines
    first, last = servers[0].split(" ", 1)[1], servers[-1].split(" ", 1)[1]
    folded = f"{len(servers)} servers ({first} ... {last})"
    out = [line for line in lines if not line.startswith("server ")]
    return [folded, *out]
