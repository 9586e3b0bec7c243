"""Building blocks of the inventory tables: value checks, limits, and how a value is shown
in an error message (the way it looks in the TOML file)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# Debian's adduser NAME_REGEX, limited to 32 characters (useradd's limit).
UNIX_USER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
MEMORY_RE = re.compile(r"^([1-9][0-9]*)([kmgt])$")
SHA512_RE = re.compile(r"^[0-9a-f]{128}$")
DNS_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Accounts a Debian/Ubuntu image already has, or that sparkstack itself creates: a hub user
# with one of these names would get a password on a system account.
RESERVED_USERS = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "sshd",
        "messagebus",
        "syslog",
        "ubuntu",
        "debian",
        "admin",
        "spark",
        "jupyterhub",
        "sparkstack-smoke",
        "sparkstack-spark",
        "polkitd",
        "lxd",
    }
)
# Spark releases before 3.3 publish no "-bin-hadoop3.tgz" and Spark 4 is the current line.
MIN_SPARK = (3, 3, 0)
# Spark refuses executors/drivers with less than 1.5 x its 300 MiB reserved memory.
MIN_JVM_MIB = 450
MAX_JVM_MIB = 16 * 1024 * 1024
MAX_CORES = 4096
MAX_TIMEOUT = 365 * 24 * 3600


class KeyProblems(ValueError):
    """Problems found by a cross-field check, each tied to a key below the validated table.

    pydantic reports an after-validator's error at the table's location; carrying the key
    lets the message name the exact key (``jupyterhub.admins``), not just its table.
    """

    def __init__(self, problems: list[tuple[str | int, str]]) -> None:
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


def empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


OptionalStr = Annotated[str | None, BeforeValidator(empty_to_none)]


def memory_mib(size: str) -> int:
    """MiB in a JVM memory size like ``"2g"``; used to compare sizes against node memory."""
    match = MEMORY_RE.match(size)
    if not match:
        raise ValueError(f"not a memory size: {size!r}")
    number, unit = int(match.group(1)), match.group(2)
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return int(number * factor)


def memory(value: str) -> str:
    text = value.strip().lower()
    if not MEMORY_RE.match(text):
        raise ValueError(f'must be a size like "2g" or "512m", got {show(value)}')
    if memory_mib(text) < MIN_JVM_MIB:
        raise ValueError(f"must be at least {MIN_JVM_MIB}m (Spark's minimum), got {show(value)}")
    if memory_mib(text) > MAX_JVM_MIB:
        raise ValueError(f"must be at most 16t, got {show(value)}")
    return text


def resolve_path(value: str | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~name/..." where this machine has no user "name"
        user = value.split("/", 1)[0]
        raise ValueError(f"cannot expand {show(user)}: no such user on this machine") from None
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / path
    return path


def unusable_file(path: Path) -> str | None:
    """Why a file the inventory names cannot be used, or None. Found by opening and
    reading it: root reads a file whatever its mode bits, so only a read tells."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the check
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            return "is a directory"
        if not stat.S_ISREG(mode):
            return "is not a regular file"
        os.read(fd, 1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    finally:
        os.close(fd)
    return None


def path_value(value: Any, info: ValidationInfo) -> Path | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a file path), got {typed(value)}")
    if "\0" in value:
        raise ValueError(f"a file path cannot contain a NUL character, got {show(value)}")
    return resolve_path(value, info)


class Table(BaseModel):
    # strict: TOML has real types, so "2" where a number belongs is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


TOML_TYPE = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    list: "array",
    dict: "table",
}


_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    """A TOML basic string. Characters that do not print (newlines, NUL, zero-width
    spaces, line separators) are escaped too: a message stays one line per problem, and
    a look-alike value shows what it really holds."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def show(value: Any) -> str:
    """A value the way it would look in the TOML file, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = toml_string(value)
    elif isinstance(value, dict):
        text = "{...}" if value else "{}"
    elif isinstance(value, list):
        text = "[...]" if value else "[]"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def typed(value: Any) -> str:
    kind = next((name for t, name in TOML_TYPE.items() if type(value) is t), None)
    if kind is None:
        kind = "date/time" if hasattr(value, "isoformat") else type(value).__name__
    return f"{kind} {show(value)}"
