"""Port 80 of a hub whose certificate comes from ACME: a program that runs on the master.

Every plain-HTTP request is redirected, permanently, to the same path and query on the
hub's HTTPS address, except the CA's HTTP-01 requests for /.well-known/acme-challenge/,
which are answered from the webroot lego writes its challenge files into (``lego --http
--http.webroot``). So lego never binds port 80 itself, and nothing has to be stopped or
started around a renewal.

It binds the port as root, then drops to an unprivileged user before it reads a single
request; the webroot is opened before the drop, so its parents need not be readable by
that user. Standard library only: it runs with the master's system Python, not the
provisioner's environment. The hub step copies this file to the master as it is.
"""

from __future__ import annotations

import argparse
import http.server
import os
import pwd
import re
import socket
import sys
from collections.abc import Sequence

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 section 8.3: a token is base64url, so anything else (a slash, "..") is refused
# before it can name a file.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


class _DualStackServer(http.server.ThreadingHTTPServer):
    """IPv6 and IPv4 on one socket where the host has IPv6; IPv4 alone where it does not."""

    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _serve(port: int, handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.HTTPServer:
    try:
        return _DualStackServer(("::", port), handler)
    except OSError:
        return http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)


def _handler(*, webroot_fd: int, target: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "sparkstack-hub-http"
        sys_version = ""

        def _challenge(self, token: str, *, body: bool) -> None:
            try:
                if not _TOKEN.fullmatch(token):
                    raise FileNotFoundError(token)
                name = ".well-known/acme-challenge/" + token
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=webroot_fd)
                with os.fdopen(fd, "rb") as file:
                    answer = file.read(4096)
            except OSError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if body:
                self.wfile.write(answer)

        def _answer(self, *, body: bool = False) -> None:
            # A request line may carry an absolute URI; only its path and query count.
            path = self.path if self.path.startswith("/") else "/"
            if self.command in ("GET", "HEAD") and path.startswith(CHALLENGE_PREFIX):
                self._challenge(path[len(CHALLENGE_PREFIX) :], body=body)
                return
            # 301 is what every client follows for GET; 308 keeps any other method and its
            # body, where a 301 would turn a POST into a GET.
            self.send_response(301 if self.command in ("GET", "HEAD") else 308)
            # The certificate's name, not the request's Host header: a redirect that no
            # request can point elsewhere, and the only name the certificate covers.
            self.send_header("Location", target + path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD  # noqa: N815

    return Handler


def _drop_to(user: str) -> None:
    if os.getuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--webroot", required=True, help="lego's --http.webroot")
    parser.add_argument("--target", required=True, help="https://name[:port], no path")
    parser.add_argument("--user", default="nobody", help="who serves, once the port is bound")
    args = parser.parse_args(argv)
    webroot_fd = os.open(args.webroot, os.O_RDONLY | os.O_DIRECTORY)
    server = _serve(args.port, _handler(webroot_fd=webroot_fd, target=args.target.rstrip("/")))
    _drop_to(args.user)
    # The port actually bound (--port=0 picks one), once it serves as the unprivileged user.
    port = server.server_address[1]
    print(f"redirecting port {port} to {args.target}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
