"""pydantic's validation errors turned into `<toml.key.path>: <plain message>` lines."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from provisioner.inventory.fields import BARE_KEY_RE, KeyProblems, show, toml_string, typed


def _key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # quoted as in TOML when it is not a bare key (a newline in a key must not
            # start a new line of the message)
            key = part if BARE_KEY_RE.fullmatch(part) else toml_string(part)
            out += f".{key}" if out else key
    return out or "(top level)"


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class for the table at ``loc`` (to list its keys in a hint)."""
    model = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def problems_of(exc: ValidationError, *, root: type[BaseModel]) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        value = err.get("input")
        cause = ctx.get("error")
        if isinstance(cause, KeyProblems):
            for key, message in cause.problems:
                sub = (key,) if isinstance(key, int) else tuple(key.split("."))
                problems.append(f"{_key_path(loc + sub)}: {message}")
            continue
        problems.append(f"{_key_path(loc)}: {_message(kind, ctx, value, loc, root)}")
    return problems


def _message(
    kind: str, ctx: dict[str, Any], value: Any, loc: tuple[str | int, ...], root: type[BaseModel]
) -> str:
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        keys = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
        if close:
            return f"unknown key (did you mean '{close[0]}'?)"
        return "unknown key (allowed: " + ", ".join(keys) + ")" if keys else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op, bound = {
            "greater_than_equal": (">=", "ge"),
            "greater_than": (">", "gt"),
            "less_than_equal": ("<=", "le"),
            "less_than": ("<", "lt"),
        }[kind]
        return f"must be {op} {ctx[bound]}, got {show(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}, got {show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table, got {typed(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = {
            "int": "an integer",
            "string": "a string",
            "list": "an array",
            "bool": "true or false",
            "path": "a string (a file path)",
        }.get(kind.split("_")[0], "a different type")
        return f"must be {wanted}, got {typed(value)}"
    if kind == "value_error":
        return str(ctx.get("error", "invalid value"))
    return f"invalid value {show(value)}"
