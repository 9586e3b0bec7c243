"""Reading an inventory file: bytes -> TOML -> a validated Inventory, or one InventoryError
that lists every problem with its exact key."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner.errors import InventoryError
from provisioner.inventory.messages import problems_of
from provisioner.inventory.model import Inventory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

# An inventory of hundreds of users is a few KiB; a file a thousand times that is the
# wrong file, and reading on would take the memory of a device or a disk image.
MAX_BYTES = 1024 * 1024


def load_inventory(path: str | Path, *, cluster_name: str | None = None) -> Inventory:
    """Read and validate an inventory file; relative paths in it are relative to the file.
    `cluster_name` replaces cluster.name (validated the same way)."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)  # /dev/zero or a disk image is never all read
    except FileNotFoundError:
        raise InventoryError(
            "no such file",
            resource=str(path),
            hint="copy inventory.example.toml and edit it, or pass the right path with -i",
        ) from None
    except IsADirectoryError:
        raise InventoryError("is a directory, not an inventory file", resource=str(path)) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", resource=str(path)) from None
    if len(raw) > MAX_BYTES:
        raise InventoryError(
            f"larger than {MAX_BYTES // 1024 // 1024} MiB: not an inventory file",
            resource=str(path),
            hint="pass the inventory (a few KiB of TOML) with -i",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InventoryError(
            f"not UTF-8 text (invalid byte on line {line}); TOML files must be UTF-8",
            resource=str(path),
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(_toml_error(exc), resource=str(path)) from None
    except RecursionError:
        raise InventoryError("invalid TOML: nested too deeply", resource=str(path)) from None
    if cluster_name is not None and isinstance(data.get("cluster", {}), dict):
        data.setdefault("cluster", {})["name"] = cluster_name
    return parse_inventory(data, source=str(path), base_dir=path.resolve().parent)


def parse_inventory(
    data: dict[str, Any], *, source: str, base_dir: Path | None = None
) -> Inventory:
    """Validate parsed TOML. ``source`` names the file in messages; ``base_dir`` anchors
    relative paths (default: the current directory)."""
    try:
        inventory = Inventory.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = problems_of(exc, root=Inventory)
        raise InventoryError(
            "inventory is not valid:\n" + "\n".join(f"  {p}" for p in problems),
            resource=source,
            hint="inventory.example.toml documents every key with its default",
        ) from None
    log.debug("inventory %s: cluster %s", source, inventory.cluster.name)
    return inventory


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    text = str(exc)
    match = re.search(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$", text)
    if match:
        return f"invalid TOML at line {match.group(2)}, column {match.group(3)}: {match.group(1)}"
    match = re.search(r"^(.*?)\s*\(at end of document\)$", text)
    if match:
        return f"invalid TOML at end of document: {match.group(1)}"
    return f"invalid TOML: {text}"
