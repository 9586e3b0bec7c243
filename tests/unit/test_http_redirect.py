"""The hub's port-80 program (provisioner/hub/http_redirect.py) as a real process on
loopback: redirects to HTTPS, serves lego's challenge files and nothing else, and serves
as an unprivileged user once its port is bound."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.hub import http_redirect

TARGET = "https://hub.example.org:8443"
TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
NOBODY = 65534


def _request(port: int, method: str, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        method,
        path,
        body=b"x=1" if method == "POST" else None,
        headers={"Host": "somewhere-else.example"},
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    # The webroot's parent is root's 0700 tmp_path: as nobody, only a directory opened
    # before the privileges were dropped can be read.
    webroot = tmp_path / "webroot"
    challenges = webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_text(TOKEN + ".thumbprint")
    (webroot / ".well-known" / "secret").write_text("not a challenge")
    for directory in (webroot, webroot / ".well-known", challenges):
        directory.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-I", http_redirect.__file__, "--port=0",
         f"--webroot={webroot}", f"--target={TARGET}", "--user=nobody"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        # It says so once it has bound the port and dropped its privileges.
        line = proc.stderr.readline()
        assert line.startswith("redirecting port "), line + proc.stderr.read()
        yield int(line.split()[2]), proc
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/some/path?q=1&r=%2F", 301),
        ("HEAD", "/", 301),
        ("GET", "/.well-known/other", 301),
        ("POST", "/hub/login", 308),  # a 301 would turn the POST into a GET
        ("PUT", "/x", 308),
    ],
)
def test_plain_http_is_redirected_to_the_same_path_on_the_hubs_https(server, method, path, status):
    port, _ = server
    response = _request(port, method, path)
    assert response.status == status
    # The configured name and port, whatever Host the request named.
    assert response.getheader("Location") == TARGET + path


def test_an_absolute_uri_in_the_request_line_is_redirected_to_the_hubs_root(server):
    port, _ = server
    response = _request(port, "GET", "http://evil.example/x")
    assert (response.status, response.getheader("Location")) == (301, TARGET + "/")


def test_a_challenge_lego_left_in_the_webroot_is_served_as_is(server):
    port, _ = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/.well-known/acme-challenge/{TOKEN}")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, (TOKEN + ".thumbprint").encode())
    connection.close()


@pytest.mark.parametrize(
    "token", ["missing", "..%2Fsecret", "../secret", "", f"{TOKEN}/x", f"{TOKEN}?a=b"]
)
def test_nothing_but_an_existing_challenge_is_served_from_the_webroot(server, token):
    port, _ = server
    response = _request(port, "GET", f"/.well-known/acme-challenge/{token}")
    assert response.status == 404


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can drop to another user")
def test_it_serves_as_nobody_once_the_port_is_bound(server):
    _, proc = server
    status = Path(f"/proc/{proc.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(map(int, uids)) == {NOBODY}
