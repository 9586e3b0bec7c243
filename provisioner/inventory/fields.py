"""Building blocks of the inventory tables: value checks, limits, and how a value is shown
in an error message (the way it looks in the TOML file)."""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
)

# The value patterns, one per concept. Each is meant for .fullmatch(): with .match() and
# "^...$", "$" also matches before a final newline, so "spark-demo\n" would pass.
NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
# Debian's adduser NAME_REGEX, limited to 32 characters (useradd's limit).
UNIX_USER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# ASCII digits only: \d would take "٤.٣.٠" (Arabic-Indic digits) for 4.3.0.
VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)")
MEMORY_RE = re.compile(r"([1-9][0-9]*)([kmgt])")
SHA512_RE = re.compile(r"[0-9a-f]{128}")
DNS_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# A base URL: http(s), a host, a path, no query or fragment (spark.mirror, spark.checksums).
HTTP_BASE_URL_RE = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
# RFC 8555 section 6.1: ACME is spoken over HTTPS only; a directory URL may have a query.
ACME_DIRECTORY_RE = re.compile(r"https://[^\s/?#]+(/[^\s#]*)?")
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
        "sparkstack-sso",
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


# Unicode categories no inventory string may hold: C0 and C1 controls (newline, tab, NUL,
# DEL, NEL) and the line and paragraph separators, which YAML reads as line breaks too.
# Every string lands in a cloud-config, a shell script or a node's settings file, where
# any of them ends a line early or starts a new one.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def not_one_line(text: str) -> str | None:
    """Why ``text`` is not printable text on one line, naming the character to remove (a
    TOML escape like \\n in a basic string is the usual way one gets in), or None."""
    found = next((ch for ch in text if unicodedata.category(ch) in _CONTROL_CATEGORIES), None)
    if found is None:
        return None
    return (
        "must not contain control characters such as newlines or tabs, "
        f"got {show(text)}; remove the {toml_string(found)[1:-1]}"
    )


def one_line(value: str) -> str:
    problem = not_one_line(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


OptionalStr = Annotated[str | None, BeforeValidator(empty_to_none)]
# A name the cloud resolves (image, flavor, network): any text, but some text.
NonEmptyStr = Annotated[str, AfterValidator(not_empty)]


def memory_mib(size: str) -> int:
    """MiB in a JVM memory size like ``"2g"``; used to compare sizes against node memory."""
    match = MEMORY_RE.fullmatch(size)
    if not match:
        raise ValueError(f"not a memory size: {size!r}")
    number, unit = int(match.group(1)), match.group(2)
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return int(number * factor)


def memory(value: str) -> str:
    text = value.strip().lower()
    if not MEMORY_RE.fullmatch(text):
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


def file_problem(path: Path | None) -> str | None:
    """What to say about a file key the inventory sets that cannot be used, or None."""
    problem = unusable_file(path) if path is not None else None
    if problem == "not found":
        return f"no such file: {path}"
    return f"{path} {problem}" if problem else None


def path_value(value: Any, info: ValidationInfo) -> Path | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a file path), got {typed(value)}")
    # Checked here, not only by Table: a path is resolved before Table's check sees it.
    return resolve_path(one_line(value), info)


class Table(BaseModel):
    # strict: TOML has real types, so "2" where a number belongs is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strings_are_one_line(cls, value: Any) -> Any:
        """Every string of every table, and every string in an array, before the key's
        own check: one rule for all keys, including those that take free text (names of
        images, flavors, networks) and those a later check strips."""
        if isinstance(value, str):
            return one_line(value)
        if isinstance(value, list):
            problems: list[tuple[str | int, str]] = [
                (index, problem)
                for index, item in enumerate(value)
                if isinstance(item, str) and (problem := not_one_line(item)) is not None
            ]
            if problems:
                raise KeyProblems(problems)
        return value


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
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


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
