"""The fault proxy against small real HTTP peers on loopback (no OpenStack needed).

The peers below are stand-ins for the upstream services, i.e. the proxy's test peers;
the proxy itself is the thing under test and runs unmodified.
"""

from __future__ import annotations

import http.client
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from tests.testbed.faultproxy import FaultProxy, RequestKey, normalise_path
from tests.waiting import wait_until

SERVER_ID = "3f0b8c8e-5d2a-4f43-9a0e-2b8f6f7f9a10"


class _PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Peer

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, body=b"", ctype="application/json", headers=(), length=True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        # Like uwsgi: one response per connection.
        self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _route(self) -> None:
        peer = self.server
        body = self._body()
        with peer.lock:
            peer.seen.append((self.command, self.path))
        url = peer.url
        path = self.path.split("?")[0]
        if path == "/catalog":
            doc = {"token": {"catalog": peer.catalog}, "self": url + "/v3"}
            self._send(201, json.dumps(doc).encode(), headers=[("X-Subject-Token", "tok")])
        elif path == "/links":
            text = json.dumps(
                {
                    "plain": url + "/v2.1/",
                    "escaped": url.replace("/", "\\/") + "\\/v2.1",
                    "localhost": url.replace("127.0.0.1", "localhost") + "/v2.1",
                    "longer_port": url + "0/x",
                },
                ensure_ascii=False,
            ).replace("\\\\/", "\\/")
            self._send(200, text.encode())
        elif path == "/binary":
            self._send(200, url.encode(), ctype="application/octet-stream")
        elif path == "/v2.1/servers" and self.command == "POST":
            loc = f"{url}/v2.1/servers/{SERVER_ID}"
            self._send(
                202, json.dumps({"server": {"id": SERVER_ID}}).encode(), headers=[("Location", loc)]
            )
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for part in (b'{"href": "', url.encode(), b'/v2.1", "n": ', b"42}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
        elif path == "/close-delimited":
            self._send(200, b'{"close": "delimited"}', length=False)
        elif path == "/no-content":
            self._send(204, length=False)
        elif path == "/not-modified":
            self._send(304, length=False, headers=[("ETag", '"v1"')])
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }
            self._send(200, json.dumps(echo).encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _route


class _Peer(ThreadingHTTPServer):
    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PeerHandler)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []
        self.catalog: list = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def peers() -> Iterator[dict[str, _Peer]]:
    made = {"identity": _Peer(), "compute": _Peer()}
    threads = [
        threading.Thread(target=p.serve_forever, kwargs={"poll_interval": 0.02})
        for p in made.values()
    ]
    for t in threads:
        t.start()
    made["identity"].catalog = [
        {
            "type": "compute",
            "endpoints": [{"interface": "public", "url": made["compute"].url + "/v2.1"}],
        },
        {
            "type": "identity",
            "endpoints": [{"interface": "public", "url": made["identity"].url + "/v3"}],
        },
    ]
    yield made
    for p in made.values():
        p.shutdown()
    for p in made.values():
        p.server_close()
    for t in threads:
        t.join()


@pytest.fixture
def upstreams(peers) -> dict[str, str]:
    return {"identity": peers["identity"].url + "/v3", "compute": peers["compute"].url + "/v2.1"}


@pytest.fixture
def proxy(upstreams) -> Iterator[FaultProxy]:
    with FaultProxy(upstreams=upstreams, seed=1) as p:
        yield p


def origin(url: str) -> str:
    return url.split("/v", 1)[0]


def test_urls_keep_the_upstream_path_on_a_loopback_listener(proxy, peers):
    assert proxy.urls["compute"].startswith("http://127.0.0.1:")
    assert proxy.urls["compute"].endswith("/v2.1")
    assert origin(proxy.urls["compute"]) != peers["compute"].url
    assert origin(proxy.urls["compute"]) != origin(proxy.urls["identity"])


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_forwards_method_path_query_headers_and_body(proxy, peers, method):
    body = b'{"x": "\xc3\xa9"}' if method in ("POST", "PUT", "PATCH") else b""
    r = requests.request(
        method,
        proxy.urls["compute"] + "/echo/thing?limit=2&marker=a",
        data=body or None,
        headers={"X-Auth-Token": "secret", "OpenStack-API-Version": "compute 2.79"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["Connection"] == "close"
    echo = r.json()
    assert echo["method"] == method
    assert echo["path"] == "/v2.1/echo/thing?limit=2&marker=a"
    assert echo["headers"]["x-auth-token"] == "secret"
    assert echo["headers"]["openstack-api-version"] == "compute 2.79"
    assert echo["headers"]["host"] == peers["compute"].url.removeprefix("http://")
    assert echo["body"].encode("latin-1") == body


def test_chunked_request_body_is_forwarded_whole(proxy):
    parts = iter([b"abc", b"", b"defgh", b"ij"])  # a generator makes requests send chunked
    r = requests.post(proxy.urls["compute"] + "/echo", data=parts, timeout=10)
    assert r.json()["body"] == "abcdefghij"
    assert r.json()["headers"]["content-length"] == "10"


def test_chunked_and_close_delimited_upstream_answers_arrive_whole(proxy, peers):
    r = requests.get(origin(proxy.urls["compute"]) + "/chunked", timeout=10)
    assert r.json() == {"href": proxy.urls["compute"], "n": 42}
    assert r.headers["Content-Length"] == str(len(r.content))
    assert "Transfer-Encoding" not in r.headers
    r = requests.get(origin(proxy.urls["compute"]) + "/close-delimited", timeout=10)
    assert r.json() == {"close": "delimited"}


def test_head_204_and_304_have_no_body(proxy):
    base = origin(proxy.urls["compute"])
    for method, path, status in [
        ("HEAD", "/echo", 200),
        ("DELETE", "/no-content", 204),
        ("GET", "/not-modified", 304),
    ]:
        # Raw http.client: a body where none is allowed would corrupt the next read.
        conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        conn.request(method, path)
        resp = conn.getresponse()
        assert resp.status == status
        assert resp.read() == b""
        assert resp.getheader("Connection") == "close"
        if status == 204:
            assert resp.getheader("Content-Length") is None
        if status == 304:
            assert resp.getheader("ETag") == '"v1"'
        conn.close()


def test_pooled_session_survives_many_sequential_calls(proxy):
    """A pooled client (like keystoneauth's) must never reuse a socket the proxy closed."""
    with requests.Session() as s:
        for _ in range(60):
            assert s.get(proxy.urls["compute"] + "/echo", timeout=10).status_code == 200


def test_upstream_urls_in_json_bodies_and_location_point_at_the_proxy(proxy, peers):
    base = origin(proxy.urls["compute"])
    links = requests.get(base + "/links", timeout=10)
    doc = links.json()
    assert "localhost:" not in links.text
    assert doc["plain"] == proxy.urls["compute"] + "/"
    assert doc["escaped"] == proxy.urls["compute"]
    assert doc["localhost"] == proxy.urls["compute"]
    # Only whole origins are replaced: port 8774 must not be found inside port 87740.
    assert doc["longer_port"] == peers["compute"].url + "0/x"
    assert int(links.headers["Content-Length"]) == len(links.content)

    created = requests.post(proxy.urls["compute"] + "/servers", json={}, timeout=10)
    assert created.status_code == 202
    assert created.headers["Location"] == f"{proxy.urls['compute']}/servers/{SERVER_ID}"

    # Binary bodies (image data) pass untouched.
    assert requests.get(base + "/binary", timeout=10).content == peers["compute"].url.encode()


def test_catalog_from_identity_leads_every_call_through_the_proxies(proxy, peers):
    token = requests.post(origin(proxy.urls["identity"]) + "/catalog", json={}, timeout=10)
    urls = {
        entry["type"]: entry["endpoints"][0]["url"] for entry in token.json()["token"]["catalog"]
    }
    assert urls == {"compute": proxy.urls["compute"], "identity": proxy.urls["identity"]}
    before = len(peers["compute"].seen)
    assert requests.get(urls["compute"] + "/servers/detail", timeout=10).status_code == 200
    assert peers["compute"].seen[before:] == [("GET", "/v2.1/servers/detail")]
    assert proxy.total(service="compute", path="/v2.1/servers/detail") == 1


def test_latency_is_added_per_service(upstreams):
    with FaultProxy(upstreams=upstreams, latency={"compute": 0.3, "identity": 0}) as proxy:
        started = time.monotonic()
        requests.get(proxy.urls["compute"] + "/echo", timeout=10)
        assert time.monotonic() - started >= 0.3
        # Only the named service is slow: identity answers long before a latency of 30 s.
        proxy.configure(latency={"compute": 30})
        assert requests.get(proxy.urls["identity"] + "/echo", timeout=5).ok
        proxy.configure(latency=0.15)
        started = time.monotonic()
        requests.get(proxy.urls["identity"] + "/echo", timeout=10)
        assert time.monotonic() - started >= 0.15


def _statuses(proxy: FaultProxy, n: int, service: str = "compute") -> list[int]:
    with requests.Session() as s:
        return [s.get(proxy.urls[service] + "/echo", timeout=10).status_code for _ in range(n)]


def test_error_rate_is_roughly_right_reproducible_and_spares_identity(upstreams, peers):
    runs = []
    for _ in range(2):
        with FaultProxy(
            upstreams=upstreams, seed=42, error_rate=0.25, error_statuses=(500, 503)
        ) as proxy:
            runs.append(_statuses(proxy, 200))
            assert _statuses(proxy, 30, service="identity") == [200] * 30
            assert proxy.total(faulted=True) == sum(s != 200 for s in runs[-1])
    assert runs[0] == runs[1]  # same seed, same faults
    failed = [s for s in runs[0] if s != 200]
    assert set(failed) == {500, 503}
    assert 0.15 * 200 <= len(failed) <= 0.35 * 200  # mean 50, sd ~6
    # Injected errors are answered by the proxy: the upstream never saw them.
    forwarded = [p for _, p in peers["compute"].seen if p == "/v2.1/echo"]
    assert len(forwarded) == 2 * (200 - len(failed))


def test_scripted_third_post_fails_once(proxy, peers):
    proxy.script(method="POST", path=r"^/v2\.1/servers$", nth=3, status=500)
    url = proxy.urls["compute"] + "/servers"
    statuses = []
    for _ in range(5):
        requests.get(url, timeout=10)  # a GET on the same path is not a match
        statuses.append(requests.post(url, json={}, timeout=10).status_code)
    assert statuses == [202, 202, 500, 202, 202]
    assert proxy.pending_rules() == []
    assert proxy.total(method="POST", path="/v2.1/servers", faulted=True) == 1
    assert proxy.total(method="POST", path="/v2.1/servers", faulted=False) == 4
    assert sum(1 for m, p in peers["compute"].seen if m == "POST") == 4


def test_rules_with_times_are_consumed_in_order(proxy):
    proxy.script(method="GET", path="/echo", nth=2, times=2, status=503)
    proxy.script(method="GET", path="/echo", status=502)
    assert _statuses(proxy, 6) == [200, 503, 503, 502, 200, 200]


def test_413_answers_a_nova_like_over_quota_body(proxy):
    proxy.script(method="POST", path="/servers$", status=413)
    r = requests.post(proxy.urls["compute"] + "/servers", json={}, timeout=10)
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/json"
    fault = r.json()["overLimit"]
    assert fault["code"] == 413
    assert fault["message"].startswith("Quota exceeded for instances")


def test_scripted_reset_is_a_connection_error_for_the_client(proxy, peers):
    proxy.script(method="GET", path="/echo", nth=2, reset=True)
    url = proxy.urls["compute"] + "/echo"
    with requests.Session() as s:
        assert s.get(url, timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            s.get(url, timeout=10)
        assert s.get(url, timeout=10).status_code == 200
    assert proxy.total(path="/v2.1/echo", faulted=True) == 1
    assert sum(1 for _, p in peers["compute"].seen if p == "/v2.1/echo") == 2
    record = [r for r in proxy.records() if r.fault][0]
    assert (record.fault, record.status) == ("reset", None)


def test_reset_rate_resets_connections(upstreams):
    with FaultProxy(upstreams=upstreams, seed=3, reset_rate=0.5) as proxy:
        errors = 0
        for _ in range(40):
            try:
                requests.get(proxy.urls["compute"] + "/echo", timeout=10)
            except requests.exceptions.ConnectionError:
                errors += 1
        assert errors == proxy.total(faulted=True)
        assert 8 <= errors <= 32


def test_forwarded_fault_reaches_the_upstream_but_loses_the_answer(proxy, peers):
    proxy.script(method="POST", path="/servers$", status=500, forward=True)
    r = requests.post(proxy.urls["compute"] + "/servers", json={}, timeout=10)
    assert r.status_code == 500
    assert ("POST", "/v2.1/servers") in peers["compute"].seen
    assert proxy.records()[-1].fault == "lost"


def test_rule_without_service_spares_identity_unless_named(proxy):
    proxy.script(path="/echo", status=500)
    assert _statuses(proxy, 1, service="identity") == [200]
    assert _statuses(proxy, 1, service="compute") == [500]
    proxy.script(service="identity", path="/echo", status=503)
    assert _statuses(proxy, 1, service="identity") == [503]


def test_counts_by_service_method_and_normalised_path(proxy):
    c = proxy.urls["compute"]
    requests.get(c + f"/servers/{SERVER_ID}", timeout=10)
    requests.get(c + "/servers/0b9f3c2a1d8e4f5a9b7c6d5e4f3a2b1c", timeout=10)
    requests.get(c + "/servers/detail?tags=sparkstack", timeout=10)
    requests.get(c + "/os-keypairs/my-key", timeout=10)
    requests.delete(c + f"/servers/{SERVER_ID}", timeout=10)
    requests.get(proxy.urls["identity"] + "/auth/tokens", timeout=10)
    assert proxy.counts() == {
        RequestKey("compute", "GET", "/v2.1/servers/{id}", False): 2,
        RequestKey("compute", "GET", "/v2.1/servers/detail", False): 1,
        RequestKey("compute", "GET", "/v2.1/os-keypairs/{id}", False): 1,
        RequestKey("compute", "DELETE", "/v2.1/servers/{id}", False): 1,
        RequestKey("identity", "GET", "/v3/auth/tokens", False): 1,
    }
    assert proxy.total() == 6
    assert proxy.total(method="get") == 5
    assert proxy.total(service="compute", method="GET") == 4
    table = proxy.summary()
    lines = table.splitlines()
    assert lines[0].split() == ["service", "method", "path", "requests", "faulted"]
    assert ["compute", "GET", "/v2.1/servers/{id}", "2", "0"] in [x.split() for x in lines]
    assert lines[-1].split() == ["total", "6", "0"]
    proxy.reset_counts()
    assert proxy.total() == 0 and proxy.counts() == {} and proxy.records() == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/v2.1/servers", "/v2.1/servers"),
        ("/v2.1/servers/detail?all_tenants=1", "/v2.1/servers/detail"),
        (f"/v2.1/servers/{SERVER_ID}/action", "/v2.1/servers/{id}/action"),
        ("/v2.1/flavors/m1.small", "/v2.1/flavors/{id}"),
        ("/v2.1/flavors/detail", "/v2.1/flavors/detail"),
        (
            "/v2.1/os-quota-sets/0b9f3c2a1d8e4f5a9b7c6d5e4f3a2b1c/defaults",
            "/v2.1/os-quota-sets/{id}/defaults",
        ),
        (f"/v2/images/{SERVER_ID}/file", "/v2/images/{id}/file"),
        (f"/v2.0/ports/{SERVER_ID}", "/v2.0/ports/{id}"),
        ("/v2.0/security-group-rules/17", "/v2.0/security-group-rules/{id}"),
        ("/v3/auth/tokens", "/v3/auth/tokens"),
        ("/", "/"),
    ],
)
def test_normalise_path(raw, expected):
    assert normalise_path(raw) == expected


def test_unreachable_upstream_is_a_502_not_a_hang():
    # Bound but not listening: connecting is refused, and no other process can take
    # the port while the test runs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        with FaultProxy(upstreams={"compute": dead}) as proxy:
            r = requests.get(proxy.urls["compute"] + "/x", timeout=10)
            assert r.status_code == 502
            assert proxy.records()[-1].status == 502


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faultproxy-")]


def test_close_leaves_no_thread_and_no_listener(upstreams):
    assert _proxy_threads() == []
    outcome: list[BaseException | int] = []

    def call_slow_service() -> None:
        try:
            outcome.append(requests.get(proxy.urls["compute"] + "/echo", timeout=60).status_code)
        except requests.exceptions.ConnectionError as exc:
            outcome.append(exc)

    with FaultProxy(upstreams=upstreams, latency={"compute": 30}) as proxy:
        port = int(origin(proxy.urls["compute"]).rsplit(":", 1)[1])
        assert requests.get(proxy.urls["identity"] + "/echo", timeout=10).ok
        assert len(_proxy_threads()) >= 2
        # A request stuck in a 30 s latency wait and an idle connection must not hold
        # close() up.
        stuck = threading.Thread(target=call_slow_service)
        stuck.start()
        idle = socket.create_connection(("127.0.0.1", port))
        wait_until(lambda: proxy.in_flight() >= 2, timeout=30, what="both connections")
        started = time.monotonic()
    # Well below the 30 s latency it must not wait out, whatever the machine's load.
    assert time.monotonic() - started < 15
    stuck.join(10)
    idle.close()
    assert not stuck.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)
    assert _proxy_threads() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_write_clouds_yaml_points_auth_at_the_identity_proxy(proxy, upstreams, tmp_path):
    source = tmp_path / "bed" / "clouds.yaml"
    source.parent.mkdir()
    entry = {
        "auth": {
            "auth_url": upstreams["identity"],
            "username": "demo",
            "password": "pw",
            "project_name": "demo",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
        "identity_api_version": 3,
    }
    source.write_text(yaml.safe_dump({"clouds": {"sparkstack-test": entry}}))
    dest = tmp_path / "proxied" / "clouds.yaml"
    name = proxy.write_clouds_yaml(dest=dest, source=source, name="proxied")
    assert name == "proxied"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    written = yaml.safe_load(dest.read_text())["clouds"]["proxied"]
    assert written["auth"] == {**entry["auth"], "auth_url": proxy.urls["identity"]}
    assert written["region_name"] == "RegionOne"
    assert "compute_endpoint_override" not in written

    proxy.write_clouds_yaml(dest=dest, source=entry, endpoint_overrides=True)
    written = yaml.safe_load(dest.read_text())["clouds"]["sparkstack-test"]
    assert written["compute_endpoint_override"] == proxy.urls["compute"]
    assert "identity_endpoint_override" not in written
    assert entry["auth"]["auth_url"] == upstreams["identity"]  # the source is not changed

    # openstacksdk's own loader reads it (no network: get_one only resolves config).
    import openstack.config

    region = openstack.config.OpenStackConfig(config_files=[str(dest)], load_envvars=False).get_one(
        cloud="sparkstack-test"
    )
    assert region.config["auth"]["auth_url"] == proxy.urls["identity"]
    assert region.get_endpoint("compute") == proxy.urls["compute"]


def test_hook_runs_before_the_nth_matching_request_reaches_the_upstream(proxy, peers):
    base = proxy.urls["compute"]
    seen_when_fired: list[int] = []

    def action() -> None:
        with peers["compute"].lock:
            seen_when_fired.append(len(peers["compute"].seen))

    hook = proxy.at_request(nth=2, method="GET", path=r"/echo/a", action=action, hold=0.3)
    requests.get(base + "/echo/b", timeout=10)  # does not match: not counted
    requests.get(base + "/echo/a", timeout=10)
    assert not hook.fired
    started = time.monotonic()
    assert requests.get(base + "/echo/a", timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.3  # held back after the action
    assert hook.fired and seen_when_fired == [2]  # the 3rd request not forwarded yet
    requests.get(base + "/echo/a", timeout=10)
    assert seen_when_fired == [2]  # once only


def test_hook_on_the_first_request_fires_before_anything_reaches_the_cloud(proxy, peers):
    counts: list[int] = []
    proxy.at_request(nth=1, action=lambda: counts.append(len(peers["compute"].seen)))
    requests.post(proxy.urls["compute"] + "/servers", data=b"{}", timeout=10)
    assert counts == [0]


def test_json_answers_are_rewritten_for_matching_requests_only(proxy):
    def as_build(doc):
        doc["path"] = "rewritten"
        return doc

    rewrite = proxy.rewrite_json(method="GET", path=r"/echo/servers", change=as_build)
    assert requests.get(proxy.urls["compute"] + "/echo/servers", timeout=10).json()["path"] == (
        "rewritten"
    )
    other = requests.get(proxy.urls["compute"] + "/echo/other", timeout=10).json()
    assert other["path"] == "/v2.1/echo/other"
    assert rewrite.applied == 1
    proxy.clear_rules()
    again = requests.get(proxy.urls["compute"] + "/echo/servers", timeout=10).json()
    assert again["path"] == "/v2.1/echo/servers"
