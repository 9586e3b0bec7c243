"""The Spark master's UI and its workers' UIs for the hub's admins, at
/services/spark/ and /services/spark/worker/<address>/.

A JupyterHub service the hub starts itself (as an unprivileged user). It logs people in
through the hub (OAuth), and the hub lets through only who holds
access:services!service=spark: its admins. Spark's own UIs have no login and listen on
the cluster's network only; this is how an admin's browser reaches them without a tunnel.

What is forwarded: the master's UI, and the UI of each worker the master lists as its own
(so the service cannot be pointed at any other address). Spark writes its links under the
prefix it is sent in X-Forwarded-Context; the absolute links between the master's and the
workers' pages are rewritten to go through here too. GET and HEAD only: the UIs' kill
buttons post forms (a job is stopped from its notebook).
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

from sparkstack_sparkui import fetch_ui, pass_on

NAME = "spark"
WORKER_PATH = "worker"


def worker_uis(master_json: dict) -> dict[str, str]:
    """Each live worker's UI address, by its host: from the master's /json/ answer."""
    out: dict[str, str] = {}
    for worker in master_json.get("workers", []):
        url = worker.get("webuiaddress", "")
        host = urlsplit(url).hostname
        if host and worker.get("state") == "ALIVE":
            out[host] = url.rstrip("/")
    return out


# A user name as the hub makes accounts (Unix names); anything else is not linked.
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def application_links(page: str, apps: list[dict], master_host: str) -> dict[str, str]:
    """The master's page links each running application's name to its driver's UI. A
    driver on the master is a notebook's, served to its user (and admins) through the
    user's server (sparkstack_sparkui): each such link, and where it should go instead.
    Read from the page's row of each application: the id links first, the UI next."""
    links: dict[str, str] = {}
    ui = re.compile(rf'href="(http://{re.escape(master_host)}:(\d+))/?"')
    for app in apps:
        user, start = app.get("user", ""), page.find(f'appId={app.get("id")}"')
        if start < 0 or not USER_RE.fullmatch(user):
            continue
        row_end = page.find("</tr>", start)
        match = ui.search(page, start, row_end if row_end > 0 else len(page))
        if match:
            links[match.group(1)] = f"/user/{user}/sparkui/{match.group(2)}/"
    return links


def rewritten(page: bytes, *, prefix: str, master_ui: str, workers: dict[str, str],
              apps: list[dict] | None = None) -> bytes:
    """A page with its absolute links to the master's and workers' UIs pointed here, and
    those to notebooks' application UIs to their users' servers."""
    text = page.decode("utf-8", "replace")
    master_host = urlsplit(master_ui).hostname or ""
    for url, there in application_links(text, apps or [], master_host).items():
        text = re.sub(rf'"{re.escape(url)}/?"', f'"{there}"', text)
    for host, url in workers.items():
        text = text.replace(f'"{url}', f'"{prefix}/{WORKER_PATH}/{host}')
    text = text.replace(f'"{master_ui.rstrip("/")}', f'"{prefix}')
    return text.encode()


def main() -> None:
    from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
    from tornado import ioloop, web

    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    master_ui = os.environ["SPARKSTACK_MASTER_UI"].rstrip("/")

    async def fetch(url: str, *, method: str, context: str, accept: str):
        return await fetch_ui(url, method=method, context=context, accept=accept, timeout=30,
                              what=url)  # fmt: skip

    class ClusterUI(HubOAuthenticated, web.RequestHandler):
        @web.authenticated
        async def get(self, worker: str | None, path: str) -> None:
            await self._forward(worker, path)

        @web.authenticated
        async def head(self, worker: str | None, path: str) -> None:
            await self._forward(worker, path)

        async def _master(self) -> dict:
            """The master's own account of the cluster: its workers and applications."""
            state = await fetch(f"{master_ui}/json/", method="GET", context=prefix,
                                accept="application/json")  # fmt: skip
            return json.loads(state.body or b"{}") if state.code == 200 else {}

        async def _forward(self, worker: str | None, path: str) -> None:
            # The master's account is asked only when needed: to check a worker's address,
            # and to rewrite a page's links (not for every script and style sheet).
            master = await self._master() if worker else None
            if not worker:  # the master's route: its empty group
                base, context = master_ui, prefix
            elif worker in (workers := worker_uis(master or {})):
                base, context = workers[worker], f"{prefix}/{WORKER_PATH}/{worker}"
            else:
                raise web.HTTPError(404, f"{worker} is not a worker of this cluster")
            url = f"{base}/{path}" + (f"?{self.request.query}" if self.request.query else "")
            answer = await fetch(url, method=self.request.method or "GET", context=context,
                                 accept=self.request.headers.get("Accept", "*/*"))  # fmt: skip
            pass_on(answer, self, context)
            body = answer.body or b""
            if "text/html" in answer.headers.get("Content-Type", ""):
                master = master if master is not None else await self._master()
                body = rewritten(body, prefix=prefix, master_ui=master_ui,
                                 workers=worker_uis(master),
                                 apps=master.get("activeapps", []))  # fmt: skip
            if self.request.method != "HEAD" and body:
                self.write(body)

    app = web.Application(
        [
            (f"{prefix}/oauth_callback", HubOAuthCallbackHandler),
            (rf"{prefix}/{WORKER_PATH}/([^/]+)/?(.*)", ClusterUI),
            (rf"{prefix}/?()(.*)", ClusterUI),
        ],
        # the login cookie's key: a new one at each start only means logging in again
        cookie_secret=os.urandom(32),
    )
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
