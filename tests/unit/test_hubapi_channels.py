"""The kernel websocket is opened again when the server drops the upgrade half-way, as a
busy master's proxy did while a kernel came up; a real TLS websocket server on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection, serve

from provisioner.errors import RemoteError
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


def _dying_kernel(ws: ServerConnection) -> None:
    """Takes the cell, prints a line, then dies: the server tells every client the kernel
    is restarting (a status with no parent), as Jupyter does when the process ends."""
    parent = json.loads(ws.recv())["header"]
    ws.send(json.dumps({"msg_type": "stream", "parent_header": parent,
                        "content": {"name": "stdout", "text": "allocating\n"}}))
    ws.send(json.dumps({"msg_type": "status", "parent_header": {},
                        "content": {"execution_state": "restarting"}}))
    ws.recv()  # held open: the client must not wait for an answer that never comes


def _vanishing_kernel(ws: ServerConnection) -> None:
    ws.recv()
    ws.socket.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize(("handler", "expected"), [
    (_dying_kernel, "the kernel died while the cell ran"),
    (_vanishing_kernel, "the connection to the kernel closed before the cell finished"),
])
def test_a_kernel_that_dies_under_a_cell_is_said_at_once(tmp_path, handler, expected):
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(handler, "127.0.0.1", 0, ssl=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        api = HubApi(host="127.0.0.1", port=port, fingerprint=der_fingerprint(der), token="t")
        started = time.monotonic()
        with pytest.raises(RemoteError) as err:
            api.execute("alice", "k1", "hog = b'x' * 2**40", timeout=60)
        assert time.monotonic() - started < 20, "said at once, not at the timeout"
        assert err.value.message.startswith(expected), err.value.message
        if handler is _dying_kernel:
            assert err.value.log_tail == "allocating\n"
            assert "jupyterhub.limits.memory" in (err.value.hint or "")
    finally:
        server.shutdown()
        thread.join(timeout=10)
