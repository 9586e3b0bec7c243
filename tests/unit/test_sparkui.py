"""The Spark UI extension's one decision (kernels/sparkui/sparkstack_sparkui.py): which
port it forwards, read from this machine's own socket tables with real listening sockets.
The handler around it runs in the users' servers: tests/e2e/test_hub_private.py."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "kernels" / "sparkui" / "sparkstack_sparkui.py"


def _load():
    spec = importlib.util.spec_from_file_location("sparkstack_sparkui", MODULE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports nothing of Jupyter until a server loads it
    return module


sparkui = _load()


def _listen(family: socket.AddressFamily, address: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((address, 0))
    s.listen()
    return s


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def _port(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def test_a_port_this_user_listens_on_is_found_at_its_address(sockets):
    s = _listen(socket.AF_INET, "127.0.0.1")
    sockets.append(s)
    assert sparkui.listening_address(_port(s), os.getuid()) == "127.0.0.1"


def test_another_users_port_is_not_found(sockets):
    s = _listen(socket.AF_INET, "127.0.0.1")
    sockets.append(s)
    assert sparkui.listening_address(_port(s), os.getuid() + 4242) is None


def test_a_port_nobody_listens_on_is_not_found(sockets):
    s = _listen(socket.AF_INET, "127.0.0.1")
    port = _port(s)
    s.close()
    assert sparkui.listening_address(port, os.getuid()) is None


def test_a_connection_on_the_port_is_not_a_listener(sockets):
    server = _listen(socket.AF_INET, "127.0.0.1")
    client = socket.create_connection(("127.0.0.1", _port(server)))
    accepted, _ = server.accept()
    sockets += [server, client, accepted]
    # the client's own port is in the table too, as an established connection
    assert sparkui.listening_address(_port(client), os.getuid()) is None


def test_wildcards_are_asked_on_127_0_0_1_and_v4_mapped_addresses_as_v4(sockets):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    anywhere4 = _listen(socket.AF_INET, "0.0.0.0")
    anywhere6 = _listen(socket.AF_INET6, "::")  # what Java's dual-stack sockets look like
    mapped = _listen(socket.AF_INET6, "::ffff:127.0.0.1")
    sockets += [anywhere4, anywhere6, mapped]
    uid = os.getuid()
    assert sparkui.listening_address(_port(anywhere4), uid) == "127.0.0.1"
    assert sparkui.listening_address(_port(anywhere6), uid) == "127.0.0.1"
    assert sparkui.listening_address(_port(mapped), uid) == "127.0.0.1"


def test_unreadable_tables_find_nothing(tmp_path, sockets):
    s = _listen(socket.AF_INET, "127.0.0.1")
    sockets.append(s)
    assert sparkui.listening_address(_port(s), os.getuid(), tables=(str(tmp_path / "no"),)) is None


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        # what Spark's Jetty sends for a page link: absolute, under the prefix already
        ("http://10.0.0.5:4040/user/a/sparkui/4040/jobs/?id=1", "/user/a/sparkui/4040/jobs/?id=1"),
        # its "/" -> "/jobs/", which ignores X-Forwarded-Context
        ("http://10.0.0.5:4040/jobs/", "/user/a/sparkui/4040/jobs/"),
        ("/stages/", "/user/a/sparkui/4040/stages/"),
        ("/user/a/sparkui/4040", "/user/a/sparkui/4040"),
        # a look-alike of the prefix is not the prefix
        ("/user/a/sparkui/40401/", "/user/a/sparkui/4040/user/a/sparkui/40401/"),
    ],
)
def test_redirects_stay_under_the_prefix_on_the_hubs_address(location, expected):
    assert sparkui.relocated(location, "/user/a/sparkui/4040") == expected
