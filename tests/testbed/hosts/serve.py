"""The bed's static file server: the mirror root over HTTP, or over HTTPS with the bed CA.

Python's http.server with two additions the package mirrors need:

* npm packuments: a request for a directory holding `packument.json` (npm asks
  `<registry>/<name>` or `<registry>/@scope%2fname`) gets that file with its `{registry}`
  placeholder replaced by the registry URL the client used, scheme and port included, so
  the one tree on disk answers over HTTP and HTTPS alike;
* TLS (--cert/--key), so nodes can be made to trust the bed's CA through the product's
  mirrors.ca_bundle setting and fail without it.

    python -m tests.testbed.hosts.serve --root DIR --bind IP --port N [--cert C --key K]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import ssl
import urllib.parse
from pathlib import Path

log = logging.getLogger(__name__)

PACKUMENT = "packument.json"
PLACEHOLDER = "{registry}"


class Handler(http.server.SimpleHTTPRequestHandler):
    scheme = "http"

    def _packument(self) -> Path | None:
        path = Path(self.translate_path(self.path))
        candidate = path / PACKUMENT
        return candidate if path.is_dir() and candidate.is_file() else None

    def _send_packument(self, file: Path, *, body: bool) -> None:
        doc = file.read_text()
        name = json.loads(doc)["name"]
        # The registry root is what precedes the package name in the request path
        # (`/npm/@scope%2fname` or `/npm/@scope/name` -> `/npm`).
        request_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).rstrip("/")
        root = request_path[: -len(name) - 1] if request_path.endswith("/" + name) else ""
        bind, port = self.server.server_address[:2]
        host = self.headers.get("Host") or f"{bind}:{port}"
        data = doc.replace(PLACEHOLDER, f"{self.scheme}://{host}{root}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        file = self._packument()
        if file is not None:
            self._send_packument(file, body=True)
        else:
            super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        file = self._packument()
        if file is not None:
            self._send_packument(file, body=False)
        else:
            super().do_HEAD()


class TLSHandler(Handler):
    scheme = "https"


class TLSServer(http.server.ThreadingHTTPServer):
    context: ssl.SSLContext

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        # The handshake runs in the request's thread, not in accept(): a client that
        # stalls (or speaks plain HTTP) holds up no one else.
        with self.context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)


def serve(root: Path, bind: str, port: int, cert: Path | None = None,
          key: Path | None = None) -> None:
    handler = functools.partial(TLSHandler if cert else Handler, directory=str(root))
    if cert:
        server: http.server.ThreadingHTTPServer = TLSServer((bind, port), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key) if key else None)
        server.context = ctx  # type: ignore[attr-defined]
    else:
        server = http.server.ThreadingHTTPServer((bind, port), handler)
    log.info("serving %s on %s://%s:%d", root, "https" if cert else "http", bind, port)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.hosts.serve")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    serve(args.root, args.bind, args.port, args.cert, args.key)


if __name__ == "__main__":
    main()
