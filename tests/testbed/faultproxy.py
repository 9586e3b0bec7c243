"""A fault and latency proxy in front of the test bed's OpenStack API endpoints.

Why: sparkstack's cloud layer claims to survive a slow or flaky cloud, to clean up
after a half-finished create, and to make few API calls. Those claims can only be
checked if a test can make a *real* OpenStack API slow or failing on demand and count
what the client sent. This module is a small HTTP reverse proxy (stdlib only) that sits
between openstacksdk and the real services of the test bed.

How it is used::

    with FaultProxy(upstreams=bed.endpoints(), seed=7) as proxy:
        proxy.write_clouds_yaml(dest=tmp_path / "clouds.yaml", source=bed_clouds_yaml,
                                cloud="sparkstack-test", name="proxied")
        proxy.script(method="POST", path=r"^/v2\\.1/servers$", nth=3, status=500)
        ...  # run the code under test against cloud "proxied"
        assert proxy.total(method="POST", service="compute") == 4

* One listener on 127.0.0.1:<ephemeral port> per distinct upstream origin; the upstream
  path is kept, so ``proxy.urls["compute"]`` is e.g. ``http://127.0.0.1:41234/v2.1``.
* Every response body that is text (JSON, HTML, plain) and the Location, Content-Location
  and Link headers get each upstream origin replaced by its proxy origin. Keystone's token
  catalog and the version documents therefore point back at the proxies, so a clouds.yaml
  whose only URL is ``auth_url`` = the identity proxy sends every call through them.
  ``*_endpoint_override`` entries can be written as well (``endpoint_overrides=True``).
* The proxy always answers ``Connection: close`` and opens a fresh upstream connection per
  request: the bed's uwsgi services close after every response, and a pooled client that
  reuses such a socket gets intermittent ECONNRESETs that would be confused with injected
  faults.
* Faults: per-service latency (added before forwarding), random 5xx answers and random
  connection resets at seeded rates, and scripted rules (``script``) that fire on the nth
  matching request. Random faults and rules without a ``service`` spare the services not in
  ``fault_services`` (by default everything but identity, so authentication keeps working).
  A rule with ``forward=True`` lets the upstream do the work and then loses the answer:
  the case where a server exists but the client was told it failed.
* Hooks (``at_request``): run a function just before the nth matching request is
  forwarded, e.g. to send the client process a SIGINT at an exact point of its work;
  ``hold`` then keeps the request back a moment, so the signal lands while the client
  waits for that answer (request 1 with a hold: nothing reached the cloud yet).
* Answer rewriting (``rewrite_json``): a function changes the upstream's JSON answer to
  matching requests before the client sees it, e.g. a server listed as BUILD or ERROR
  with a fault message while Nova has it ACTIVE.
* Counters by (service, method, normalised path, faulted); ids, uuids and names in id
  position become ``{id}``; the query string is dropped.

What openstacksdk does with these faults (openstacksdk 4.x over keystoneauth1 5.x; read
from their source and checked against the real bed in
tests/cloud/test_faultproxy_cloud.py):

* A 5xx from compute, network, identity or placement is **not retried**: keystoneauth's
  ``status_code_retries`` defaults to 0 and openstacksdk only raises it for image (5
  retries, on 503 only, with growing delays starting at 0.5 s) and baremetal. The SDK
  raises ``openstack.exceptions.HttpException`` (``ConflictException``,
  ``NotFoundException``... for 4xx) at once. ``<service>_status_code_retries`` and
  ``<service>_retriable_status_codes`` (default 429 and 503 in keystoneauth) in clouds.yaml
  turn it on per service. Retrying POST /servers blindly can create a duplicate server;
  the cloud layer has to retry itself, and only what is safe to repeat.
* A connection reset is not retried either (``connect_retries`` defaults to 0); it
  surfaces as ``keystoneauth1.exceptions.ConnectFailure`` / ``ConnectionError``
  (``openstack.exceptions.SDKException`` is *not* its base class).

Requests are counted before the answer is sent, so a test that has its response can
assert counts without waiting. Nothing outlives ``close()``: listener threads and
per-request threads are joined, latency waits are cut short, idle client sockets are
shut down.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

IDENTITY = "identity"

# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers whose value may carry an upstream URL that must point back at the proxy.
_URL_HEADERS = frozenset({"location", "content-location", "link"})

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_HEX_ID = re.compile(r"^[0-9a-fA-F]{32,}$")
_NUMBER = re.compile(r"^\d+$")
# Collections whose members are addressed by a name-like id (a keypair name, a flavor id
# such as "m1.small", a name openstacksdk's find_* tries as an id before listing). The
# segment after one of these is an id unless it is a fixed sub-path.
_NAMED_COLLECTIONS = frozenset(
    {
        "servers",
        "flavors",
        "images",
        "os-keypairs",
        "os-server-groups",
        "os-quota-sets",
        "networks",
        "subnets",
        "ports",
        "routers",
        "floatingips",
        "security-groups",
        "security-group-rules",
        "projects",
        "users",
        "resource_providers",
        "allocations",
    }
)
_FIXED_SUBPATHS = frozenset({"detail", "defaults", "action", "file", "stage", "import"})

# Modern Nova answers an over-quota server create with 403 {"forbidden": ...}; older
# releases (and the absolute-limit checks some clouds still run) used 413 {"overLimit":
# ...}. Both shapes are what openstacksdk parses into the exception message.
_QUOTA_KEYS = {403: "forbidden", 413: "overLimit"}


def normalise_path(path: str) -> str:
    """Return ``path`` without query and with ids replaced by ``{id}``.

    Counting by raw path would give one row per server; counting by normalised path is
    what a test asserts ("one GET /v2.1/servers/{id} per poll").
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    segments = path.split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        prev = segments[i - 1] if i else ""
        if seg and (
            _UUID.match(seg)
            or _HEX_ID.match(seg)
            or _NUMBER.match(seg)
            or (prev in _NAMED_COLLECTIONS and seg not in _FIXED_SUBPATHS)
        ):
            out.append("{id}")
        else:
            out.append(seg)
    return "/".join(out)


def quota_body(
    *, status: int = 413, resource: str = "instances", used: int = 10, limit: int = 10
) -> bytes:
    """A Nova-shaped over-quota error body for ``status`` (403 or 413)."""
    message = (
        f"Quota exceeded for {resource}: Requested 1, but already used {used} of {limit} {resource}"
    )
    key = _QUOTA_KEYS.get(status, "computeFault")
    inner: dict[str, Any] = {"code": status, "message": message}
    if status == 413:
        inner["retryAfter"] = "0"
    return json.dumps({key: inner}).encode()


def _fault_body(status: int) -> bytes:
    reason = http.client.responses.get(status, "Error")
    return json.dumps(
        {"computeFault": {"code": status, "message": f"Injected {status} {reason} (fault proxy)"}}
    ).encode()


class RequestKey(NamedTuple):
    service: str
    method: str
    path: str
    faulted: bool


@dataclass(frozen=True)
class RequestRecord:
    """One proxied request, kept in a bounded log for benchmarks and failure messages."""

    service: str
    method: str
    path: str
    raw_path: str
    status: int | None  # None: the connection was reset
    fault: str | None  # "status", "reset", "lost" (forwarded, then failed) or None
    seconds: float


@dataclass
class Rule:
    """A scripted failure: fires on matching requests number nth .. nth+times-1.

    Rules are tried in the order they were added and the first one not yet exhausted
    that matches claims the request, whether it fires on it or not. So rules on the
    same requests run one after the other (the second counts its nth from when the
    first is used up), and rules on different requests count independently. A request
    claimed by a rule is never also subject to the random faults.
    """

    method: str | None
    path: re.Pattern[str] | None
    service: str | None
    nth: int
    times: int
    status: int | None
    reset: bool
    body: bytes | None
    headers: Mapping[str, str]
    forward: bool
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.fired >= self.times

    def matches(self, *, service: str, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.service is not None and self.service != service:
            return False
        return self.path is None or bool(self.path.search(path))


@dataclass
class Hook:
    """``action`` runs once, just before the nth matching request (counted from when the
    hook was added) is forwarded; the request then waits ``hold`` seconds."""

    method: str | None
    path: re.Pattern[str] | None
    nth: int
    action: Callable[[], None]
    hold: float
    seen: int = 0
    fired: bool = False


@dataclass
class JsonRewrite:
    """``change`` gets the parsed JSON answer of every matching forwarded request and
    returns what the client receives instead."""

    method: str | None
    path: re.Pattern[str] | None
    change: Callable[[Any], Any]
    applied: int = 0


def _request_matches(
    method: str | None, path: re.Pattern[str] | None, *, req_method: str, raw_path: str
) -> bool:
    return (method is None or method == req_method) and (
        path is None or bool(path.search(raw_path))
    )


@dataclass(frozen=True)
class _Decision:
    status: int | None = None
    reset: bool = False
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    forward: bool = False

    @property
    def kind(self) -> str:
        if self.forward:
            return "lost"
        return "reset" if self.reset else "status"


def _per_service(value: float | Mapping[str, float] | None) -> dict[str | None, float]:
    """Normalise ``0.2`` or ``{"compute": 0.2}`` into a dict; key None is the default."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {None: float(value)}


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _origin(url: str) -> _Origin:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"fault proxy forwards plain http only, got upstream {url!r}")
    return _Origin(parts.scheme, parts.hostname, parts.port or 80)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = False  # the request threads are joined below, not by the mixin

    def __init__(self, address: tuple[str, int], proxy: FaultProxy, origin: _Origin) -> None:
        self.proxy = proxy
        self.origin = origin
        self._request_threads: list[threading.Thread] = []
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # As ThreadingMixIn does, but with named threads that close() joins, so no
        # thread outlives the proxy and a test can tell them apart.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"faultproxy-{self.origin.port}-request",
        )
        self._request_threads = [t for t in self._request_threads if t.is_alive()]
        self._request_threads.append(thread)
        thread.start()

    def server_close(self) -> None:
        super().server_close()
        for thread in self._request_threads:
            thread.join()
        self._request_threads.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer is routine under fault injection.
        log.debug("fault proxy: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A client that connects and never sends a request must not pin a thread for ever.
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self.close_connection = True
        self.server.proxy._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class FaultProxy:
    """Reverse proxies for a set of OpenStack services, with faults and counters.

    ``upstreams`` maps service type to endpoint URL (the bed's ``endpoints()``).
    Latency and rates take a number (all services) or a dict by service type.
    """

    def __init__(
        self,
        *,
        upstreams: Mapping[str, str],
        seed: int = 0,
        latency: float | Mapping[str, float] | None = None,
        error_rate: float | Mapping[str, float] | None = None,
        reset_rate: float | Mapping[str, float] | None = None,
        error_statuses: Iterable[int] = (500, 502, 503),
        fault_services: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        upstream_timeout: float = 120.0,
        log_size: int = 10_000,
    ) -> None:
        if not upstreams:
            raise ValueError("fault proxy needs at least one upstream")
        self._upstreams = {svc: url.rstrip("/") for svc, url in upstreams.items()}
        self._host = host
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._rules: list[Rule] = []
        self._hooks: list[Hook] = []
        self._rewrites: list[JsonRewrite] = []
        self._counts: Counter[RequestKey] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._servers: dict[_Origin, _Server] = {}
        self._threads: list[threading.Thread] = []
        self._rewrite_table: dict[bytes, bytes] = {}
        self._rewrite_re: re.Pattern[bytes] | None = None
        self._latency: dict[str | None, float] = {}
        self._error_rate: dict[str | None, float] = {}
        self._reset_rate: dict[str | None, float] = {}
        self._error_statuses: tuple[int, ...] = ()
        self._fault_services: frozenset[str] = frozenset()
        self.configure(
            latency=latency,
            error_rate=error_rate,
            reset_rate=reset_rate,
            error_statuses=error_statuses,
            fault_services=fault_services
            if fault_services is not None
            else [s for s in self._upstreams if s != IDENTITY],
        )

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._servers:
            return
        self._closing.clear()
        try:
            for origin in dict.fromkeys(_origin(u) for u in self._upstreams.values()):
                server = _Server((self._host, 0), self, origin)
                self._servers[origin] = server
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"faultproxy-{origin.port}",
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close()
            raise
        pairs = self._build_rewrites()
        self._rewrite_table = dict(pairs)
        # One pass over the body; a port must not match a longer port ("...:877" in ":8774").
        self._rewrite_re = re.compile(
            b"(?:" + b"|".join(re.escape(old) for old, _ in pairs) + rb")(?![0-9:])"
        )
        log.info("fault proxy up: %s", self.urls)

    def close(self) -> None:
        """Stop every listener and wait for every request thread to end."""
        self._closing.set()
        with self._lock:
            live = list(self._connections)
        for sock in live:
            # Unblocks handlers still reading a request; ones waiting on the upstream end
            # within upstream_timeout.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # shutdown() waits for the next poll of each loop; ask all loops at once.
        stoppers = [threading.Thread(target=srv.shutdown) for srv in self._servers.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for thread in self._threads:
            thread.join()
        for server in self._servers.values():
            server.server_close()  # joins the per-request threads
        self._threads.clear()
        self._servers.clear()

    def in_flight(self) -> int:
        """Client connections open right now (requests being read, delayed or answered)."""
        with self._lock:
            return len(self._connections)

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    # -- addresses -----------------------------------------------------------------------

    def _proxy_origin(self, origin: _Origin) -> str:
        server = self._servers[origin]
        return f"http://{self._host}:{server.server_address[1]}"

    @property
    def urls(self) -> dict[str, str]:
        """Service type -> proxied endpoint URL (upstream path kept)."""
        if not self._servers:
            raise RuntimeError("fault proxy is not started")
        return {
            svc: self._proxy_origin(_origin(url)) + urlsplit(url).path
            for svc, url in self._upstreams.items()
        }

    def url(self, service: str) -> str:
        return self.urls[service]

    def _build_rewrites(self) -> list[tuple[bytes, bytes]]:
        pairs: list[tuple[bytes, bytes]] = []
        for origin in self._servers:
            new = self._proxy_origin(origin)
            hosts = {origin.host}
            # The catalog may say localhost where the bed handed us 127.0.0.1 (or back).
            if origin.host in ("127.0.0.1", "localhost"):
                hosts |= {"127.0.0.1", "localhost"}
            for h in sorted(hosts):
                old = f"{origin.scheme}://{h}:{origin.port}"
                pairs.append((old.encode(), new.encode()))
                # JSON encoders that escape "/" (allowed by RFC 8259).
                pairs.append((old.replace("/", "\\/").encode(), new.replace("/", "\\/").encode()))
                if origin.port == 80:
                    pairs.append((f"{origin.scheme}://{h}".encode(), new.encode()))
        # Longest first, so "http://host" never eats part of "http://host:8774".
        pairs.sort(key=lambda p: len(p[0]), reverse=True)
        return pairs

    def _rewrite(self, data: bytes) -> bytes:
        if self._rewrite_re is None:
            return data
        table = self._rewrite_table
        return self._rewrite_re.sub(lambda m: table[m.group(0)], data)

    def _service_for(self, origin: _Origin, path: str) -> str:
        """The service type a request belongs to: longest upstream path prefix wins."""
        best, best_len = None, -1
        for svc, url in self._upstreams.items():
            if _origin(url) != origin:
                continue
            prefix = urlsplit(url).path.rstrip("/")
            if (path == prefix or path.startswith(prefix + "/") or not prefix) and len(
                prefix
            ) > best_len:
                best, best_len = svc, len(prefix)
        if best is None:
            best = next(s for s, u in self._upstreams.items() if _origin(u) == origin)
        return best

    # -- faults --------------------------------------------------------------------------

    def configure(
        self,
        *,
        latency: float | Mapping[str, float] | None = None,
        error_rate: float | Mapping[str, float] | None = None,
        reset_rate: float | Mapping[str, float] | None = None,
        error_statuses: Iterable[int] | None = None,
        fault_services: Iterable[str] | None = None,
    ) -> None:
        """Change faults at run time; arguments left None keep their value."""
        with self._lock:
            if latency is not None:
                self._latency = _per_service(latency)
            if error_rate is not None:
                self._error_rate = _per_service(error_rate)
            if reset_rate is not None:
                self._reset_rate = _per_service(reset_rate)
            if error_statuses is not None:
                self._error_statuses = tuple(error_statuses)
                if not self._error_statuses:
                    raise ValueError("error_statuses must not be empty")
            if fault_services is not None:
                self._fault_services = frozenset(fault_services)

    def script(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        service: str | None = None,
        nth: int = 1,
        times: int = 1,
        status: int | None = None,
        reset: bool = False,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        forward: bool = False,
    ) -> Rule:
        """Fail matching requests nth .. nth+times-1 (1-based, counted from now).

        ``path`` is a regular expression searched in the raw request path (query
        included). ``status=413`` or ``403`` without ``body`` answers a Nova-shaped
        over-quota error. ``forward=True`` sends the request upstream first and then
        answers the fault, as when a response is lost after the cloud acted.
        """
        if (status is None) == (not reset):
            raise ValueError("give exactly one of status=... or reset=True")
        if nth < 1 or times < 1:
            raise ValueError("nth and times count from 1")
        if isinstance(body, Mapping):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        if body is None and status is not None:
            body = quota_body(status=status) if status in _QUOTA_KEYS else _fault_body(status)
        rule = Rule(
            method=method.upper() if method else None,
            path=re.compile(path) if path is not None else None,
            service=service,
            nth=nth,
            times=times,
            status=status,
            reset=reset,
            body=body,
            headers=dict(headers or {}),
            forward=forward,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        """Drop every scripted rule, hook and answer rewrite."""
        with self._lock:
            self._rules.clear()
            self._hooks.clear()
            self._rewrites.clear()

    def at_request(
        self,
        *,
        nth: int,
        action: Callable[[], None],
        method: str | None = None,
        path: str | None = None,
        hold: float = 0.0,
    ) -> Hook:
        """Run ``action`` just before forwarding the nth request matching ``method`` and
        ``path`` (a regular expression searched in the raw path), counted from now over
        every service; then hold that request back ``hold`` seconds."""
        if nth < 1:
            raise ValueError("nth counts from 1")
        hook = Hook(
            method=method.upper() if method else None,
            path=re.compile(path) if path is not None else None,
            nth=nth,
            action=action,
            hold=hold,
        )
        with self._lock:
            self._hooks.append(hook)
        return hook

    def rewrite_json(
        self,
        *,
        change: Callable[[Any], Any],
        method: str | None = None,
        path: str | None = None,
    ) -> JsonRewrite:
        """Pass the JSON answers of matching requests through ``change`` (a function of
        the parsed body that returns the body to send) until ``clear_rules``."""
        rewrite = JsonRewrite(
            method=method.upper() if method else None,
            path=re.compile(path) if path is not None else None,
            change=change,
        )
        with self._lock:
            self._rewrites.append(rewrite)
        return rewrite

    def _run_hooks(self, *, method: str, raw_path: str) -> None:
        due: list[Hook] = []
        with self._lock:
            for hook in self._hooks:
                if hook.fired or not _request_matches(
                    hook.method, hook.path, req_method=method, raw_path=raw_path
                ):
                    continue
                hook.seen += 1
                if hook.seen == hook.nth:
                    hook.fired = True
                    due.append(hook)
        for hook in due:  # outside the lock: an action may be slow or call back in
            hook.action()
            if hook.hold > 0:
                self._closing.wait(hook.hold)

    def _rewritten(self, *, method: str, raw_path: str, data: bytes) -> bytes:
        with self._lock:
            rewrites = [
                r
                for r in self._rewrites
                if _request_matches(r.method, r.path, req_method=method, raw_path=raw_path)
            ]
        if not rewrites or not data:
            return data
        try:
            doc = json.loads(data)
        except ValueError:
            return data
        for rewrite in rewrites:
            doc = rewrite.change(doc)
            with self._lock:
                rewrite.applied += 1
        return json.dumps(doc).encode()

    def pending_rules(self) -> list[Rule]:
        """Rules that have not fired all their times (a test can assert this is empty)."""
        with self._lock:
            return [r for r in self._rules if not r.exhausted]

    def _decide(self, *, service: str, method: str, raw_path: str) -> _Decision | None:
        """Pick the fault for one request (rules first, then random) and count it."""
        with self._lock:
            faultable = service in self._fault_services
            for rule in self._rules:
                if rule.exhausted:
                    continue
                if rule.service is None and not faultable:
                    continue
                if not rule.matches(service=service, method=method, path=raw_path):
                    continue
                # The first live rule that matches claims the request, fired or not: rules
                # on the same requests run one after the other.
                rule.seen += 1
                if rule.seen < rule.nth:
                    return None
                rule.fired += 1
                return _Decision(
                    status=rule.status,
                    reset=rule.reset,
                    body=rule.body,
                    headers=rule.headers,
                    forward=rule.forward,
                )
            if not faultable:
                return None
            reset_rate = self._reset_rate.get(service, self._reset_rate.get(None, 0.0))
            error_rate = self._error_rate.get(service, self._error_rate.get(None, 0.0))
            # Always draw both numbers so one rate does not shift the other's sequence.
            draw_reset, draw_error = self._random.random(), self._random.random()
            if draw_reset < reset_rate:
                return _Decision(reset=True)
            if draw_error < error_rate:
                status = self._random.choice(self._error_statuses)
                return _Decision(status=status, body=_fault_body(status))
            return None

    def _latency_for(self, service: str) -> float:
        with self._lock:
            return self._latency.get(service, self._latency.get(None, 0.0))

    # -- counters ------------------------------------------------------------------------

    def counts(self) -> dict[RequestKey, int]:
        with self._lock:
            return dict(self._counts)

    def total(
        self,
        *,
        method: str | None = None,
        service: str | None = None,
        path: str | None = None,
        faulted: bool | None = None,
    ) -> int:
        """Number of requests matching every given filter (``path`` is normalised form)."""
        with self._lock:
            return sum(
                n
                for key, n in self._counts.items()
                if (method is None or key.method == method.upper())
                and (service is None or key.service == service)
                and (path is None or key.path == path)
                and (faulted is None or key.faulted == faulted)
            )

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()

    def summary(self) -> str:
        """A fixed-width table of the counters, for failure messages and benchmarks."""
        rows: dict[tuple[str, str, str], list[int]] = {}
        for key, n in self.counts().items():
            row = rows.setdefault((key.service, key.method, key.path), [0, 0])
            row[0] += n
            if key.faulted:
                row[1] += n
        header = ("service", "method", "path", "requests", "faulted")
        lines = [(s, m, p, str(r[0]), str(r[1])) for (s, m, p), r in sorted(rows.items())]
        total = sum(r[0] for r in rows.values())
        faulted = sum(r[1] for r in rows.values())
        lines.append(("total", "", "", str(total), str(faulted)))
        widths = [max(len(x[i]) for x in [header, *lines]) for i in range(5)]

        def fmt(cols: tuple[str, ...]) -> str:
            return "  ".join(
                c.rjust(w) if i >= 3 else c.ljust(w)
                for i, (c, w) in enumerate(zip(cols, widths, strict=True))
            ).rstrip()

        return "\n".join([fmt(header), *(fmt(x) for x in lines)])

    # -- clouds.yaml ---------------------------------------------------------------------

    def cloud_config(
        self, entry: Mapping[str, Any], *, endpoint_overrides: bool = False
    ) -> dict[str, Any]:
        """A copy of a clouds.yaml cloud entry whose calls all go through the proxy."""
        cloud = copy.deepcopy(dict(entry))
        auth = dict(cloud.get("auth") or {})
        urls = self.urls
        if IDENTITY in urls:
            auth["auth_url"] = self._proxied_auth_url(auth.get("auth_url"), urls[IDENTITY])
        cloud["auth"] = auth
        if endpoint_overrides:
            for svc, url in urls.items():
                if svc != IDENTITY:
                    cloud[f"{svc.replace('-', '_')}_endpoint_override"] = url
        return cloud

    def _proxied_auth_url(self, auth_url: str | None, identity_url: str) -> str:
        if not auth_url:
            return identity_url
        origin = _origin(auth_url)
        if origin in self._servers:
            return self._proxy_origin(origin) + urlsplit(auth_url).path
        return identity_url

    def write_clouds_yaml(
        self,
        *,
        dest: str | Path,
        source: str | Path | Mapping[str, Any],
        cloud: str = "sparkstack-test",
        name: str | None = None,
        endpoint_overrides: bool = False,
    ) -> str:
        """Write a clouds.yaml at ``dest`` with cloud ``name`` (default: ``cloud``) proxied.

        ``source`` is a clouds.yaml path or an already-loaded cloud entry. Returns the
        cloud name to pass to ``openstack.connect(cloud=...)`` together with
        ``OS_CLIENT_CONFIG_FILE=dest`` (or ``openstack.config.OpenStackConfig(
        config_files=[dest])``).
        """
        import yaml  # openstacksdk's own dependency; imported here to keep import cheap

        if isinstance(source, Mapping):
            entry = source
        else:
            data = yaml.safe_load(Path(source).read_text()) or {}
            try:
                entry = data["clouds"][cloud]
            except KeyError:
                raise KeyError(f"cloud {cloud!r} not found in {source}") from None
        name = name or cloud
        doc = {"clouds": {name: self.cloud_config(entry, endpoint_overrides=endpoint_overrides)}}
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # It holds a password: never readable by others, not even for a moment.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(yaml.safe_dump(doc, sort_keys=False))
        dest.chmod(0o600)
        return name

    # -- the request path ----------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        started = time.monotonic()
        origin = handler.server.origin
        method = handler.command.upper()
        raw_path = handler.path
        service = self._service_for(origin, raw_path.split("?", 1)[0])
        norm = normalise_path(raw_path)
        body = handler._read_body()

        delay = self._latency_for(service)
        if delay > 0 and self._closing.wait(delay):
            self._reset(handler)
            return

        decision = self._decide(service=service, method=method, raw_path=raw_path)
        with self._lock:
            self._counts[RequestKey(service, method, norm, decision is not None)] += 1

        upstream = None
        if decision is None or decision.forward:
            self._run_hooks(method=method, raw_path=raw_path)
            upstream = self._forward(handler, origin, method, raw_path, body)
            if upstream is not None and decision is None and 200 <= upstream[0] < 300:
                status_, reason, headers_, data = upstream
                data = self._rewritten(method=method, raw_path=raw_path, data=data)
                upstream = (status_, reason, headers_, data)
            if upstream is None and decision is None:
                decision = _Decision(status=502, body=_fault_body(502))
                fault = None  # the upstream failed, nothing was injected
            else:
                fault = decision.kind if decision is not None else None
        else:
            fault = decision.kind

        if decision is None:
            status: int | None = upstream[0] if upstream else None
        else:
            status = None if decision.reset else decision.status
        # Recorded before answering, like the counters: once the client has its answer,
        # the record is there.
        record = RequestRecord(
            service=service,
            method=method,
            path=norm,
            raw_path=raw_path,
            status=status,
            fault=fault,
            seconds=time.monotonic() - started,
        )
        with self._lock:
            self._log.append(record)

        if decision is None:
            assert upstream is not None
            self._answer_upstream(handler, method, *upstream)
        elif decision.reset:
            self._reset(handler)
        else:
            self._answer_fault(handler, decision, method)

    def _forward(
        self, handler: _Handler, origin: _Origin, method: str, raw_path: str, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() not in _HOP_BY_HOP
            and k.lower() not in ("host", "content-length", "accept-encoding", "expect")
        }
        # Identity encoding only: bodies are rewritten as bytes.
        headers["Accept-Encoding"] = "identity"
        headers["Connection"] = "close"
        if body or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(origin.host, origin.port, timeout=self._upstream_timeout)
        try:
            conn.request(method, raw_path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()  # handles chunked, Content-Length, close-delimited, HEAD
            return resp.status, resp.reason, resp.getheaders(), data
        except (OSError, http.client.HTTPException) as exc:
            log.warning("upstream %s %s %s failed: %s", origin.url, method, raw_path, exc)
            return None
        finally:
            conn.close()

    def _answer_upstream(
        self,
        handler: _Handler,
        method: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        data: bytes,
    ) -> None:
        content_type = ""
        upstream_length = None
        out: list[tuple[str, str]] = []
        for k, v in headers:
            lk = k.lower()
            if lk in _HOP_BY_HOP:
                continue
            if lk == "content-length":
                upstream_length = v
                continue
            if lk == "content-type":
                content_type = v.lower()
            if lk in _URL_HEADERS:
                v = self._rewrite(v.encode("latin-1")).decode("latin-1")
            out.append((k, v))
        if data and _is_text(content_type):
            data = self._rewrite(data)
        # send_response_only: the upstream's own Date and Server headers are passed on.
        handler.log_request(status)
        handler.send_response_only(status, reason)
        for k, v in out:
            handler.send_header(k, v)
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if method == "HEAD" or status == 304:
            # Keep the length the upstream announced for the body it did not send.
            if upstream_length is not None:
                handler.send_header("Content-Length", upstream_length)
        elif status != 204 and not 100 <= status < 200:
            handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if not no_body and data:
            handler.wfile.write(data)

    def _answer_fault(self, handler: _Handler, decision: _Decision, method: str) -> None:
        status = decision.status or 500
        body = b"" if method == "HEAD" else (decision.body or b"")
        handler.send_response(status)
        names = {k.lower() for k in decision.headers}
        if "content-type" not in names:
            handler.send_header("Content-Type", "application/json")
        for k, v in decision.headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(decision.body or b"")))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    @staticmethod
    def _reset(handler: _Handler) -> None:
        """Abort the client connection with a TCP RST and no answer."""
        sock = handler.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()
        handler.close_connection = True


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or "json" in content_type
        or "xml" in content_type
        or content_type.startswith("application/x-www-form-urlencoded")
    )
