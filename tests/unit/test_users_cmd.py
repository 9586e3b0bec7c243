"""Passwords on the command line's output: shown on a terminal only (a real pty here),
named by their file everywhere else; `users reset` of a name the inventory does not have
is a user error before any cloud is asked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from provisioner.cli import main
from provisioner.commands.output import print_hub
from provisioner.commands.users import print_reset
from provisioner.inventory import load_inventory
from provisioner.workflows.hub_stage import HubOutcome
from provisioner.workflows.users import Reset
from tests.unit.inventory_cases import pinned_example
from tests.unit.test_imports import probe

PASSWORD = "Zq8-secret-in-test_Xy"
CREDENTIALS = Path("/home/someone/.config/sparkstack/demo/credentials.toml")


@contextmanager
def console_on(kind: str) -> Iterator[tuple[Console, list[str]]]:
    """A Console writing to a real pty or pipe; what it wrote, once the block ends."""
    if kind == "pty":
        reader, writer = os.openpty()
    else:
        reader, writer = os.pipe()
    written: list[str] = []
    with os.fdopen(writer, "w") as file:
        yield Console(file=file, width=200, emoji=False), written
    # writer closed: read to the end (a pty's reader then fails with EIO, a pipe's gets b"")
    chunks = []
    while True:
        try:
            chunk = os.read(reader, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(reader)
    written.append(b"".join(chunks).decode())


# (where stdout goes, environment): CI runners often set FORCE_COLOR or TTY_COMPATIBLE,
# which make rich call a pipe a terminal.
WHERE = [
    ("pty", {}),
    ("pipe", {}),
    ("pipe", {"FORCE_COLOR": "1"}),
    ("pipe", {"TTY_COMPATIBLE": "1"}),
]


@pytest.mark.parametrize(("kind", "env"), WHERE)
def test_up_prints_the_admin_password_on_a_terminal_only(tmp_path, monkeypatch, kind, env):
    for key in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    inv = load_inventory(pinned_example(tmp_path / "inventory.toml"))
    assert list(inv.jupyterhub.admins) == ["alice"]
    outcome = HubOutcome(url="https://10.0.0.5/", fingerprint="AB:CD", changed=True,
                         credentials=CREDENTIALS,
                         new_passwords={"alice": PASSWORD, "bob": "bobs-" + PASSWORD})  # fmt: skip
    with console_on(kind) as (console, written):
        if env:  # the case this guards against: rich itself would call it a terminal
            assert console.is_terminal
        print_hub(console, inv, outcome)
    text = written[0]
    assert "bobs-" not in text  # never another user's
    if kind == "pty":
        assert f"admin alice, initial password: {PASSWORD}" in text
    else:
        assert PASSWORD not in text
        assert f"admin alice: initial password in {CREDENTIALS}" in text
    assert f"every user's initial password: {CREDENTIALS}" in text


@pytest.mark.parametrize(("kind", "env"), WHERE)
def test_users_reset_prints_the_password_on_a_terminal_only(monkeypatch, kind, env):
    for key in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    done = Reset(user="bob", credentials=CREDENTIALS, password=PASSWORD)
    assert PASSWORD not in repr(done)
    with console_on(kind) as (console, written):
        print_reset(console, done)
    text = written[0]
    if kind == "pty":
        assert f"bob's new password: {PASSWORD}" in text
        assert f"kept in {CREDENTIALS}" in text
    else:
        assert PASSWORD not in text
        assert f"bob's new password is in {CREDENTIALS}" in text


def test_reset_of_a_user_not_in_the_inventory_exits_2_naming_it_and_the_users(tmp_path, capsys):
    inv = pinned_example(tmp_path / "inventory.toml")
    assert main(["users", "reset", "mallory", "-i", str(inv)]) == 2
    err = capsys.readouterr().err
    assert "'mallory' is not a hub user of cluster" in err
    assert "jupyterhub.users: alice, bob" in err
    assert "Traceback" not in err
    # decided from the inventory alone: no cloud library even loaded
    assert probe(["users", "reset", "mallory", "-i", str(inv)]) == {"codes": [2], "loaded": []}


def test_reset_with_no_hub_users_says_the_list_is_empty(tmp_path, capsys):
    inv = pinned_example(tmp_path / "inventory.toml")
    text = inv.read_text()
    inv.write_text(
        text.replace('users = ["alice", "bob"]', "users = []").replace(
            'admins = ["alice"]', "admins = []"
        )
    )
    assert main(["users", "reset", "alice", "-i", str(inv)]) == 2
    assert "none (jupyterhub.users is empty)" in capsys.readouterr().err


def test_a_commands_log_keeps_no_token_from_websocket_headers(tmp_path, monkeypatch):
    import logging

    from provisioner.commands.common import session

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with session("demo") as current:
        # what websockets' client logs as it opens a kernel's channels
        logging.getLogger("websockets.client").debug("> Authorization: token %s", PASSWORD)
        logging.getLogger("provisioner.test").debug("a line of our own")
    text = current.log.read_text()
    assert "a line of our own" in text
    assert PASSWORD not in text


def _sso_inventory(tmp_path: Path) -> Path:
    path = pinned_example(tmp_path / "inventory.toml")
    secret = tmp_path / "client-secret"
    secret.write_text("from-the-provider\n")
    text = path.read_text().replace('authenticator = "pam"', 'authenticator = "oidc"')
    text = text.replace('issuer = ""', 'issuer = "https://login.example.org/realms/team"')
    text = text.replace('client_id = ""', 'client_id = "sparkstack"')
    path.write_text(text.replace('client_secret_file = ""', f'client_secret_file = "{secret}"'))
    return path


def test_with_single_sign_on_there_is_no_password_to_reset_or_print(tmp_path, capsys):
    path = _sso_inventory(tmp_path)
    assert main(["users", "reset", "alice", "-i", str(path)]) == 2
    err = capsys.readouterr().err
    assert "logs people in through single sign-on: the hub keeps no passwords" in err
    assert "reset them there" in err and "https://login.example.org/realms/team" in err
    assert probe(["users", "reset", "alice", "-i", str(path)]) == {"codes": [2], "loaded": []}

    # `up`'s closing lines: where people sign in, and the redirect URI the provider needs
    outcome = HubOutcome(url="https://203.0.113.7/", fingerprint="AB:CD", changed=True,
                         credentials=CREDENTIALS,
                         sso_callback="https://203.0.113.7/hub/oauth_callback")  # fmt: skip
    with console_on("pipe") as (console, written):
        print_hub(console, load_inventory(path), outcome)
    text = written[0]
    issuer, callback = "https://login.example.org/realms/team", outcome.sso_callback
    assert f"people sign in through {issuer} (client sparkstack)" in text
    assert f"redirect URI to register at the provider: {callback}" in text
    assert "password" not in text
