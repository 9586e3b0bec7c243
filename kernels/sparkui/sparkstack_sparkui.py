"""Each user's Spark application UIs through their own notebook server, at
<server>/sparkui/<port>/ (e.g. /user/alice/sparkui/4040/).

A jupyter_server extension: the master's hub puts this file on its users' servers' path
and enables it in their config. Who gets in is what the server's own login says (the
user, and admins allowed to reach the user's server), as for the notebooks. What is
forwarded is only a port on which a process of the server's own user listens, read from
the kernel's socket tables, so neither the Spark master's UI (the spark user's) nor
another user's application is reachable through it. Spark writes its links and redirects
under the prefix it is sent in X-Forwarded-Context (its "/" redirect aside, which is put
under it here), so every page works under it.

GET and HEAD only: Spark's kill buttons post a form, which the server's XSRF check would
refuse anyway; stop a job from the notebook (the kernel's interrupt cancels it).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from urllib.parse import urlsplit

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
LISTEN = "0A"
# What a browser needs of Spark's answer; hop-by-hop headers and cookies stay behind.
PASSED_HEADERS = ("Content-Type", "Cache-Control", "Expires", "Last-Modified", "ETag",
                  "Content-Disposition")  # fmt: skip


def _address(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order) -> text;
    a wildcard becomes 127.0.0.1, a v4-mapped v6 address its v4 form."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:
        # Java listens on "::" dual-stack: loopback v4 reaches it, where a host may have no
        # v6 loopback at all
        return "127.0.0.1"
    return str(address)


def listening_address(port: int, uid: int, tables: tuple[str, ...] = TCP_TABLES) -> str | None:
    """The address on which a socket of `uid` listens at `port`, or None."""
    for table in tables:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 8 or fields[3] != LISTEN or int(fields[7]) != uid:
                continue
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port:
                return _address(address)
    return None


def relocated(location: str, prefix: str) -> str:
    """Where a redirect of the UI's sends the browser: its Jetty makes redirects absolute
    with the address asked here (which the browser cannot reach), and its "/" -> "/jobs/"
    ignores X-Forwarded-Context, so a path not under the prefix gets it."""
    parts = urlsplit(location)
    path = parts.path or "/"
    if not (path == prefix or path.startswith(prefix + "/")):
        path = prefix + (path if path.startswith("/") else "/" + path)
    return path + (f"?{parts.query}" if parts.query else "")


async def fetch_ui(url: str, *, method: str, context: str, accept: str, timeout: float,
                   what: str):
    """A Spark UI's answer to `url`, asked as if under `context` (X-Forwarded-Context), its
    redirects not followed and its own 4xx/5xx kept for the browser; a UI that does not
    answer is the caller's 502. (The admins' service, sparkstack_clusterui, too.)"""
    from tornado import web
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    try:
        return await AsyncHTTPClient().fetch(
            url, method=method, follow_redirects=False, raise_error=False,
            headers={"X-Forwarded-Context": context, "Accept": accept},
            request_timeout=timeout,
        )  # fmt: skip
    except (OSError, HTTPClientError) as exc:
        raise web.HTTPError(502, f"{what} did not answer: {exc}") from None


def pass_on(answer, handler, prefix: str) -> None:
    """The UI's status and the headers a browser needs, to `handler`'s answer; its
    redirects kept under `prefix`. (The admins' service, sparkstack_clusterui, too.)"""
    handler.set_status(answer.code, answer.reason)
    for name in PASSED_HEADERS:
        if name in answer.headers:
            handler.set_header(name, answer.headers[name])
    if location := answer.headers.get("Location"):
        handler.set_header("Location", relocated(location, prefix))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "sparkstack_sparkui"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    pattern = url_path_join(serverapp.base_url, r"sparkui/(\d+)/?(.*)")
    serverapp.web_app.add_handlers(".*$", [(pattern, _handler())])


def _handler() -> type:
    # Made when the server loads the extension: the parsing above imports no Jupyter.
    from jupyter_server.base.handlers import JupyterHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    class SparkUIHandler(JupyterHandler):
        @web.authenticated
        async def get(self, port: str, path: str) -> None:
            await self._forward(int(port), path)

        @web.authenticated
        async def head(self, port: str, path: str) -> None:
            await self._forward(int(port), path)

        async def _forward(self, port: int, path: str) -> None:
            address = listening_address(port, os.getuid())
            if address is None:
                raise web.HTTPError(404, f"no application of yours listens on port {port}")
            host = f"[{address}]" if ":" in address else address
            url = f"http://{host}:{port}/{path}"
            if self.request.query:
                url += f"?{self.request.query}"
            prefix = url_path_join(self.base_url, "sparkui", str(port))
            # 502 when the application ended meanwhile
            answer = await fetch_ui(url, method=self.request.method or "GET", context=prefix,
                                    accept=self.request.headers.get("Accept", "*/*"),
                                    timeout=60, what=f"the UI on port {port}")  # fmt: skip
            pass_on(answer, self, prefix)
            if self.request.method != "HEAD" and answer.body:
                self.write(answer.body)

    return SparkUIHandler
