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


def _load_cluster_ui():
    import sys

    sys.modules.setdefault("sparkstack_sparkui", sparkui)  # what it imports, as on the node
    path = MODULE.with_name("sparkstack_clusterui.py")
    spec = importlib.util.spec_from_file_location("sparkstack_clusterui", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The master's /json/ answer, cut to what the service reads (Spark 4's field names).
MASTER_JSON = {
    "workers": [
        {"id": "worker-1", "webuiaddress": "http://10.77.0.11:8081", "state": "ALIVE"},
        {"id": "worker-2", "webuiaddress": "http://10.77.0.12:8081/", "state": "ALIVE"},
        {"id": "worker-0", "webuiaddress": "http://10.77.0.9:8081", "state": "DEAD"},
    ]
}


def test_the_admins_service_forwards_only_to_the_masters_live_workers():
    ui = _load_cluster_ui()
    assert ui.worker_uis(MASTER_JSON) == {
        "10.77.0.11": "http://10.77.0.11:8081",
        "10.77.0.12": "http://10.77.0.12:8081",
    }
    assert ui.worker_uis({}) == {}


def test_the_links_between_master_and_worker_pages_go_through_the_service():
    ui = _load_cluster_ui()
    workers = ui.worker_uis(MASTER_JSON)
    master_page = (
        b'<a href="http://10.77.0.11:8081">worker-1</a>'
        b'<a href="http://10.77.0.12:8081">worker-2</a>'
        b'<a href="http://10.77.0.9:8081">worker-0</a>'  # dead: not forwarded, left
        b'<a href="http://10.77.0.10:4040">an application</a>'
    )
    assert ui.rewritten(
        master_page, prefix="/services/spark", master_ui="http://10.77.0.10:8080",
        workers=workers,
    ) == (
        b'<a href="/services/spark/worker/10.77.0.11">worker-1</a>'
        b'<a href="/services/spark/worker/10.77.0.12">worker-2</a>'
        b'<a href="http://10.77.0.9:8081">worker-0</a>'
        b'<a href="http://10.77.0.10:4040">an application</a>'
    )  # fmt: skip
    worker_page = b'<a href="http://10.77.0.10:8080">Back to Master</a>'
    assert ui.rewritten(
        worker_page, prefix="/services/spark", master_ui="http://10.77.0.10:8080/",
        workers=workers,
    ) == b'<a href="/services/spark">Back to Master</a>'  # fmt: skip


def test_a_notebooks_application_on_the_masters_page_links_to_its_users_server():
    ui = _load_cluster_ui()
    # two rows as Spark's master page writes them (id, then the name linked to its UI),
    # and a driver elsewhere, which stays as it is
    page = (
        b'<tr><td><a href="app/?appId=app-1">app-1</a></td>'
        b'<td><a href="http://10.77.0.10:4041">PySparkShell</a></td><td>bob</td></tr>'
        b'<tr><td><a href="app/?appId=app-0">app-0</a></td>'
        b'<td><a href="http://10.77.0.10:4040/">PySparkShell</a></td><td>alice</td></tr>'
        b'<tr><td><a href="app/?appId=app-2">app-2</a></td>'
        b'<td><a href="http://10.77.0.99:4040">elsewhere</a></td><td>carol</td></tr>'
        b'<tr><td><a href="app/?appId=app-3">app-3</a></td>'
        b'<td><a href="http://10.77.0.10:4042">odd</a></td><td>"x</td></tr>'
    )
    apps = [{"id": "app-0", "user": "alice"}, {"id": "app-1", "user": "bob"},
            {"id": "app-2", "user": "carol"}, {"id": "app-3", "user": '"x'}]  # fmt: skip
    out = ui.rewritten(page, prefix="/services/spark", master_ui="http://10.77.0.10:8080",
                       workers={}, apps=apps)  # fmt: skip
    assert b'href="/user/alice/sparkui/4040/"' in out
    assert b'href="/user/bob/sparkui/4041/"' in out
    assert b'href="http://10.77.0.99:4040"' in out  # not a notebook on the master
    assert b'href="http://10.77.0.10:4042"' in out  # not a name the hub could have made
    assert out.count(b"/sparkui/") == 2
