"""Generated inventories: whatever the file holds, loading it either gives an Inventory or
raises InventoryError whose every problem line starts with a key of the file or of the
schema; never another exception (which the CLI would turn into exit 1, "please report").

The documents are the example inventory with random edits around the real schema: keys
set to values of every TOML type (unicode, huge and negative numbers, nan, dates, nested
arrays and tables), keys deleted, tables replaced by values, near-miss and unknown keys
added; and the example's text with random characters cut or inserted, for the parser.
And valid inventories with a control character put into one string key, anywhere in it:
refused, naming that key alone.
1,000 examples each under CI, derandomised so a CI run is the same every time.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from provisioner.errors import InventoryError
from provisioner.inventory import Inventory, load_inventory
from tests.ci import in_ci
from tests.unit.inventory_cases import (
    EXAMPLE,
    every_string_set,
    example_data,
    string_at,
    string_keys,
    with_string,
)
from tests.unit.toml_writer import toml_document

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FUZZ = settings(
    max_examples=1000 if in_ci() else 150,
    derandomize=in_ci(),
    database=None,  # nothing written into the checkout
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------- strategies


def schema_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the example: the keys the edits aim at."""
    paths = []
    for key, value in data.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths += schema_paths(value, (*prefix, key))
    return paths


EXAMPLE_PATHS = schema_paths(example_data())
LEAF_PATHS = [p for p in EXAMPLE_PATHS if not any(q[: len(p)] == p != q for q in EXAMPLE_PATHS)]
KEY_WORDS = sorted({p[-1] for p in EXAMPLE_PATHS})

nasty_strings = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="~/.-_ 0:a\n", max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "0.0.0.0/0",
            "::/0",
            "10.0.0.1/8",
            "~",
            "~nosuchuser/key",
            "/",
            "..",
            "a\x00b",
            "🚀",
            "spark\u200bdemo",
            "x" * 300,
            "1e9",
            "-1",
            "https://",
            "http://h/?q",
            "spark-demo\n",
            "2g\n",
            "debian\t",
            "4.3.0\r\n",
        ]
    ),
)
scalars = st.one_of(
    nasty_strings,
    st.integers(),
    st.sampled_from([-1, 0, 1, 10**6, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
keys = st.one_of(
    st.sampled_from(KEY_WORDS),
    st.sampled_from(KEY_WORDS).map(lambda k: k[:-1] or "x"),  # near misses
    st.text(min_size=1, max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)


def alike(value: Any) -> st.SearchStrategy[Any]:
    """Values of the type the key has in the example, which get past the type check to
    the key's own validation."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int | float):
        return st.one_of(st.integers(), st.floats())
    if isinstance(value, str):
        return nasty_strings
    if isinstance(value, list):
        return st.lists(nasty_strings, max_size=5)
    return values


@st.composite
def edited_inventories(draw: st.DrawFn) -> dict[str, Any]:
    data = example_data()
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        # mostly a value, sometimes a whole table (replaced, dropped, given a stray key)
        path = draw(st.sampled_from(LEAF_PATHS) | st.sampled_from(EXAMPLE_PATHS))
        parent = data
        for key in path[:-1]:
            child = parent.get(key)
            if not isinstance(child, dict):
                break
            parent = child
        else:
            action = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
            if action == "set" and draw(st.integers(0, 3)):  # mostly of the key's own type
                parent[path[-1]] = draw(alike(parent.get(path[-1])))
            elif action == "set":
                parent[path[-1]] = draw(values)
            elif action == "drop":
                parent.pop(path[-1], None)
            else:
                parent[draw(keys)] = draw(values)
    return data


@st.composite
def mangled_texts(draw: st.DrawFn) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=20))
        text = text[:at] + draw(st.text(max_size=8)) + text[at + cut :]
    return text


# ------------------------------------------------------------------------------ check


def spelled(key: str) -> str:
    """A key as TOML writes it: bare, or a basic string with what does not print escaped."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    escapes = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = ""
    for ch in key:
        if ch in '"\\':
            out += "\\" + ch
        elif ch in escapes:
            out += escapes[ch]
        elif not ch.isprintable():
            out += f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"
        else:
            out += ch
    return f'"{out}"'


def key_paths(data: Any, prefix: str = "") -> Iterator[str]:
    """Every key path as the error messages spell it: a.b, a.b[0], a.b[0].c."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{spelled(key)}" if prefix else spelled(key)
            yield path
            yield from key_paths(value, path)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            path = f"{prefix}[{index}]"
            yield path
            yield from key_paths(value, path)


SCHEMA_KEYS = set(key_paths(example_data()))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def load_text(scratch: Path, text: str) -> Inventory | InventoryError:
    path = scratch / "inventory.toml"
    path.write_text(text, encoding="utf-8")
    try:
        inventory = load_inventory(path)
    except InventoryError as exc:
        assert exc.exit_code == 2
        syntax = exc.message.startswith("invalid TOML")
        event(
            "refused: TOML syntax" if syntax else "refused: a key"
        )  # --hypothesis-show-statistics
        return exc
    event("loaded")
    return inventory


def assert_names_keys(error: InventoryError, known: set[str]) -> None:
    head, *lines = error.message.splitlines()
    if head.startswith("invalid TOML"):
        assert not lines and ("line" in head or "end of document" in head), error.message
        return
    assert head == "inventory is not valid:", error.message
    assert lines, error.message
    for line in lines:
        text = line.strip()
        assert text.startswith(tuple(f"{k}: " for k in known)), (text, error.message)


@FUZZ
@given(data=edited_inventories())
def test_an_edited_inventory_loads_or_names_the_key(scratch, data):
    result = load_text(scratch, toml_document(data))
    if isinstance(result, InventoryError):
        assert_names_keys(result, SCHEMA_KEYS | set(key_paths(data)) | {"(top level)"})


@FUZZ
@given(text=mangled_texts())
def test_a_mangled_inventory_text_loads_or_says_what_is_wrong(scratch, text):
    result = load_text(scratch, text)
    if isinstance(result, InventoryError):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = {}  # then the message must be the parser's, with its line
        assert_names_keys(result, SCHEMA_KEYS | set(key_paths(data)) | {"(top level)"})


@pytest.fixture(scope="module")
def string_keyed(scratch: Path) -> list[tuple[str, dict[str, Any], tuple[str | int, ...]]]:
    """(key, a valid inventory where it holds a real value, where) per string key."""
    files = scratch / "files"
    files.mkdir()
    cases = {}
    for data in every_string_set(files):
        for key, where in string_keys(data):
            cases.setdefault(key, (key, data, where))
    return list(cases.values())


# Newlines, tabs, NUL, the rest of C0 and C1, DEL, and Unicode's line/paragraph separators.
control_characters = st.characters(categories=["Cc", "Zl", "Zp"])


@FUZZ
@given(choice=st.data())
def test_a_control_character_anywhere_in_a_string_key_is_refused_naming_that_key(
    scratch, string_keyed, choice
):
    key, data, where = choice.draw(st.sampled_from(string_keyed))
    good = string_at(data, where)
    control = choice.draw(control_characters)
    at = choice.draw(st.integers(min_value=0, max_value=len(good)))
    bad = good[:at] + control + good[at:]
    result = load_text(scratch, toml_document(with_string(data, where, bad)))
    assert isinstance(result, InventoryError)
    head, *lines = result.message.splitlines()
    assert head == "inventory is not valid:"
    assert [line.split(": ", 1)[0].strip() for line in lines] == [key], result.message
    assert "must not contain control characters" in lines[0], result.message
