"""The kernel websocket is opened again when the server drops the upgrade half-way, as a
busy master's proxy did while a kernel came up; a real TLS websocket server on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection, serve

from provisioner.hubapi import HubApi, der_fingerprint
from tests.render.conftest import self_signed


def _kernel(ws: ServerConnection) -> None:
    """Answers one execute_request the way a kernel does: a result, then idle."""
    request = json.loads(ws.recv())
    parent = request["header"]
    for msg_type, content in (
        ("execute_result", {"data": {"text/plain": "42"}}),
        ("status", {"execution_state": "idle"}),
    ):
        ws.send(json.dumps({"header": {"msg_type": msg_type}, "msg_type": msg_type,
                            "parent_header": parent, "content": content,
                            "channel": "iopub"}))  # fmt: skip


@pytest.fixture
def flaky_kernel(tmp_path: Path) -> Iterator[tuple[int, str, list[int]]]:
    """A websocket server whose first connection is dropped before the upgrade answer."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    accepted: list[int] = []

    def process_request(conn: ServerConnection, _request: object) -> None:
        accepted.append(1)
        if len(accepted) == 1:
            conn.socket.shutdown(socket.SHUT_RDWR)  # no answer, no close frame

    server = serve(_kernel, "127.0.0.1", 0, ssl=context, process_request=process_request)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    try:
        yield port, der_fingerprint(der), accepted
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_an_upgrade_dropped_half_way_is_tried_again(flaky_kernel):
    port, fingerprint, accepted = flaky_kernel
    api = HubApi(host="127.0.0.1", port=port, fingerprint=fingerprint, token="t")
    # the URL's path is the hub's; this server answers any path
    assert api.execute("alice", "k1", "6 * 7", timeout=30) == "42"
    assert len(accepted) == 2
