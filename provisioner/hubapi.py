"""A client of the hub's REST and kernel websocket APIs, over HTTPS pinned to the hub's
certificate by its SHA256 fingerprint (a self-signed certificate has no CA to check).

The fingerprint is checked right after the TLS handshake, before any byte of a request
(and so before any token) is sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import ssl
import time
import uuid
from typing import Any

from provisioner.errors import RemoteError

log = logging.getLogger(__name__)


def der_fingerprint(der: bytes) -> str:
    """SHA256 of a DER certificate, as colon-separated upper-case hex (hub.tls's form)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class PinnedContext(ssl.SSLContext):
    """A TLS client context that accepts exactly one certificate."""

    pinned: str = ""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        offered = der_fingerprint(wrapped.getpeercert(binary_form=True) or b"")
        if offered != self.pinned:
            wrapped.close()
            raise ssl.SSLError(
                f"the hub's certificate is not the pinned one: expected {self.pinned}, "
                f"offered {offered}"
            )
        return wrapped


def pinned_context(fingerprint: str) -> PinnedContext:
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the pin replaces name and CA checks
    ctx.verify_mode = ssl.CERT_NONE
    ctx.pinned = fingerprint.upper()
    return ctx


class HubApi:
    """JSON over HTTPS to https://<host>:<port>, with an API token."""

    def __init__(self, *, host: str, port: int, fingerprint: str, token: str = "") -> None:
        self.host = host
        self.port = port
        self.context = pinned_context(fingerprint)
        self.token = token

    @property
    def base(self) -> str:
        return f"https://{self.host}:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: tuple[int, ...] = (200,),
        timeout: float = 30,
    ) -> Any:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=timeout
        )
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteError(
                f"{method} {self.base}{path} failed: {exc}", resource="hub", step="smoke"
            ) from exc
        finally:
            conn.close()
        if resp.status not in expect:
            raise RemoteError(
                f"{method} {path} answered {resp.status}: {text[:300]}",
                resource="hub",
                step="smoke",
            )
        return json.loads(text) if text.strip() else None

    def _channels(self, url: str, *, deadline: float, timeout: float) -> Any:
        """The kernel's websocket, opened again while the deadline allows: the server
        answers the upgrade only once the kernel is up (a PySpark kernel starts a driver JVM
        first), and an upgrade left unanswered on a busy master is worth another try."""
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        while True:
            left = deadline - time.monotonic()
            try:
                return connect(
                    url,
                    ssl=self.context,
                    additional_headers={"Authorization": f"token {self.token}"},
                    # Short tries: a kernel still starting keeps starting between them.
                    open_timeout=max(1.0, min(left, 30)),
                    max_size=None,
                )
            # ConnectionClosed: the proxy dropped the upgrade half-way (seen on a busy
            # master while the kernel came up), which a later try gets through.
            except (TimeoutError, ConnectionError, InvalidHandshake, ConnectionClosed) as exc:
                refused = isinstance(exc, InvalidStatus) and exc.response.status_code < 500
                if refused or deadline - time.monotonic() <= 1:
                    raise RemoteError(
                        f"the kernel's websocket did not open within {timeout:.0f} s ({exc})",
                        resource="hub",
                        step="smoke",
                        hint="the kernel may still be starting: sparkstack logs --hub",
                    ) from None
                log.info("kernel websocket: %s; opening it again", exc)

    def execute(self, user: str, kernel_id: str, code: str, *, timeout: float = 300) -> str:
        """Run code in a kernel through the websocket API; its result or printed output.
        A Python exception in the kernel is a RemoteError quoting it."""
        url = f"wss://{self.host}:{self.port}/user/{user}/api/kernels/{kernel_id}/channels"
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id, "session": session, "username": user,
                "msg_type": "execute_request", "version": "5.3",
            },
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {
                "code": code, "silent": False, "store_history": False,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
            },
        }  # fmt: skip
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + timeout
        out: list[str] = []  # stdout, and the value of the last expression
        err: list[str] = []  # stderr: Spark's progress bars, warnings

        def stopped(message: str, *, shown: str | None = None,
                    hint: str | None = None) -> RemoteError:
            """Why the cell gave no answer, with what it printed so far (or `shown`)."""
            tail = "".join(out + err)[-2000:] if shown is None else shown[-4000:]
            return RemoteError(message, resource="hub", step="smoke", hint=hint,
                               log_tail=tail or None)

        with self._channels(url, deadline=deadline, timeout=timeout) as ws:
            ws.send(json.dumps(request))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise stopped(f"the kernel did not finish within {timeout:.0f} s")
                try:
                    msg = json.loads(ws.recv(timeout=left))
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    raise stopped("the connection to the kernel closed before the cell "
                                  "finished (the kernel died or the hub restarted)") from None
                kind, content = msg.get("msg_type"), msg.get("content", {})
                # The server says so to every client when the kernel process ended; the
                # usual cause is memory (each user's is limited: jupyterhub.limits.memory).
                if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
                    raise stopped(
                        "the kernel died while the cell ran (its server is restarting it); "
                        "out of memory is the usual cause",
                        hint="jupyterhub.limits.memory is each user's memory on the master",
                    )
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if kind == "stream":
                    which = out if content.get("name") == "stdout" else err
                    which.append(content.get("text", ""))
                elif kind in ("execute_result", "display_data"):
                    out.append(content.get("data", {}).get("text/plain", ""))
                elif kind == "error":
                    # what the cell wrote to stderr first (its chunks carry their own
                    # newlines): often the why, such as Spark's own error
                    raise stopped(
                        f"the kernel raised {content.get('ename')}: {content.get('evalue')}",
                        shown="".join(err) + "\n".join(content.get("traceback", [])),
                    )
                elif kind == "status" and content.get("execution_state") == "idle":
                    return "".join(out).strip()
