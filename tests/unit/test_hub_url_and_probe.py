"""The hub's URL, one function for what `up` prints and `status` shows, and the one probe
that says whether the hub answers (the hub stage's wait and `status`), run here by a real
Python against a real HTTPS server on loopback."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner.commands.cluster import _hub_url
from provisioner.hub.config import hub_url
from provisioner.hub.steps import _API_PROBE
from provisioner.inventory import load_inventory
from tests.render.conftest import self_signed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("address", "port", "domain", "url"),
    [
        ("203.0.113.7", 443, None, "https://203.0.113.7/"),
        ("203.0.113.7", 8443, None, "https://203.0.113.7:8443/"),
        ("203.0.113.7", 443, "hub.example.org", "https://hub.example.org/"),
        ("203.0.113.7", 8443, "hub.example.org", "https://hub.example.org:8443/"),
        ("2001:db8::7", 443, None, "https://[2001:db8::7]/"),
        ("2001:db8::7", 8443, None, "https://[2001:db8::7]:8443/"),
    ],
)
def test_hub_url_names_the_domain_or_the_address_and_a_port_only_when_not_443(
    address, port, domain, url
):
    assert hub_url(address=address, port=port, domain=domain) == url


def test_status_shows_the_url_up_prints_the_floating_ip_first():
    inv = load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")
    master = P.Node(name="demo-master", role=P.MASTER, index=0, id="m", status="ACTIVE",
                    fixed_ip="10.77.0.10", floating_ip="10.78.0.5")  # fmt: skip
    observed = P.Observed(cluster="demo", nodes=(master,))
    # what ensure_hub reports: the last of the master's addresses, the floating IP
    expected = hub_url(address="10.78.0.5", port=inv.jupyterhub.port)
    assert _hub_url(inv, observed) == expected
    assert expected.startswith("https://10.78.0.5")


class _Hub(http.server.BaseHTTPRequestHandler):
    answer = 200

    def do_GET(self) -> None:
        self.send_response(self.answer if self.path == "/hub/api" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def https_hub(tmp_path) -> Iterator[type[_Hub]]:
    """An HTTPS server on loopback with a self-signed certificate, as the hub has."""
    handler = type("Hub", (_Hub,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.port = server.server_address[1]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _probe(port: int) -> int:
    """The probe's exit status, run as api_answers runs it: the script on stdin, the port
    its argument."""
    proc = subprocess.run([sys.executable, "-", str(port)], input=_API_PROBE.encode(),
                          capture_output=True, timeout=60)  # fmt: skip
    return proc.returncode


def test_the_probe_says_yes_only_when_the_hub_api_answers_200(https_hub):
    assert _probe(https_hub.port) == 0  # a self-signed certificate is accepted
    https_hub.answer = 503
    assert _probe(https_hub.port) == 1


def test_the_probe_says_no_when_nothing_listens():
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        assert _probe(bound.getsockname()[1]) == 1
