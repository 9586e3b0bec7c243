"""A real browser for end-to-end tests: Debian's Chromium driven by selenium, headless.

The browser trusts the hub the way a user's browser would after importing a certificate:
through an NSS database under a throwaway HOME (Chromium on Linux reads user-added trust
from $HOME/.pki/nssdb), never by switching certificate checks off. Each session gets a
fresh HOME and profile, so no cookie, cache or workspace leaks between tests.

What goes wrong is kept: when a step fails, every open tab's screenshot, page source and
the browser's console log are written to the artifacts directory the test names, and its
path is printed (pytest shows it with the failure).

    with browser_session(base_url=..., trust=Trust(pem, is_ca=False),
                         artifacts=tmp_path / "browser") as b:
        b.login("alice", password)
        b.wait_for_lab()
        b.open_notebook("PySpark (...)")
        assert b.run_cell("1 + 1") == "2"
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

log = logging.getLogger(__name__)

# Debian's packages (chromium, chromium-driver): giving both paths keeps selenium from
# looking for (or downloading) a browser and driver of its own.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CERTUTIL = "/usr/bin/certutil"  # libnss3-tools

# The active notebook's cells (JupyterLab 4 hides inactive panels with lm-mod-hidden).
_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
# A cell's prompt reads "[*]:" while it runs and "[3]:" once it has run.
_RAN = re.compile(r"\[\d+\]")


def missing_tools() -> list[str]:
    """The programs a browser session needs that this machine lacks."""
    return [p for p in (CHROMIUM, CHROMEDRIVER, CERTUTIL) if not Path(p).exists()]


@dataclass(frozen=True)
class Trust:
    """A certificate the browser trusts: a CA that signs the server's certificate
    (``is_ca=True``), or a self-signed server certificate trusted as it is (a peer)."""

    pem: Path
    is_ca: bool


def make_nss_db(home: Path, trust: Trust | Sequence[Trust]) -> Path:
    """An NSS database under ``home`` trusting ``trust`` (one or several certificates: the
    hub's CA and a sign-on provider's), as Chromium on Linux reads it.

    "C,," trusts a CA to issue TLS server certificates; "P,," trusts the certificate
    itself as a server's (for a CA:FALSE self-signed leaf, which can anchor nothing else).
    """
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    store = ["-d", f"sql:{db}"]
    trusts = [trust] if isinstance(trust, Trust) else list(trust)
    argvs = [[CERTUTIL, *store, "-N", "--empty-password"]] + [
        [CERTUTIL, *store, "-A", "-t", "C,," if t.is_ca else "P,,", "-n",
         f"sparkstack-e2e-{n}", "-i", str(t.pem)] for n, t in enumerate(trusts)]  # fmt: skip
    for argv in argvs:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return db


def _css_string(text: str) -> str:
    """``text`` as a quoted CSS string, for attribute selectors."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Browser:
    """One Chromium window on the hub; every method waits for what it did to show."""

    driver: webdriver.Chrome
    base_url: str
    artifacts: Path
    timeout: float = 30.0
    timings: dict[str, float] = field(default_factory=dict)
    _saved: int = 0
    _kept_for: BaseException | None = None

    # --- waiting, artifacts, steps --------------------------------------------------------

    def wait(self, timeout: float | None = None) -> WebDriverWait[webdriver.Chrome]:
        return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.1)

    def visible(self, css: str, *, timeout: float | None = None) -> WebElement:
        element: WebElement = self.wait(timeout).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css)),
            f"nothing visible matches {css!r} at {self.driver.current_url}",
        )
        return element

    def save_artifacts(self, name: str) -> Path:
        """Screenshot, page source and console log of every open tab, under ``name``."""
        self._saved += 1
        stem = f"{self._saved:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        current = self.driver.current_window_handle
        for n, handle in enumerate(self.driver.window_handles):
            self.driver.switch_to.window(handle)
            base = self.artifacts / f"{stem}-tab{n}"
            self.driver.save_screenshot(str(base.with_suffix(".png")))
            base.with_suffix(".html").write_text(
                f"<!-- {self.driver.current_url} -->\n{self.driver.page_source}"
            )
        self.driver.switch_to.window(current)
        with contextlib.suppress(WebDriverException):
            console = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            (self.artifacts / f"{stem}-console.json").write_text(json.dumps(console, indent=1))
        return self.artifacts

    def keep_artifacts(self, name: str, exc: BaseException) -> None:
        """Save the artifacts of a failure once (nested steps see the same exception)."""
        if exc is self._kept_for:
            return
        self._kept_for = exc
        try:
            where = self.save_artifacts(name)
            print(f"browser: failed at {name!r}; screenshots and page sources in {where}")
        except WebDriverException as gone:  # the browser itself is gone
            print(f"browser: failed at {name!r}; no artifacts could be saved: {gone}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time ``name``; if it fails, keep the artifacts named after it and say where."""
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.keep_artifacts(name, exc)
            raise
        finally:
            key, n = name, 1
            while key in self.timings:  # the same step again (a second login)
                n += 1
                key = f"{name} #{n}"
            self.timings[key] = round(time.monotonic() - started, 2)

    # --- the hub ----------------------------------------------------------------------------

    def login(self, user: str, password: str) -> None:
        """Fill and send the hub's username/password form (PAM), as a person would."""
        with self.step(f"login {user}"):
            self.driver.get(f"{self.base_url}/hub/login")
            self.visible("#username_input").send_keys(user)
            self.visible("#password_input").send_keys(password)
            self.visible("#login_submit").click()
            # The form posts and the browser either stays on the login page with an error
            # or leaves it for the spawn pages / JupyterLab.
            self.wait().until(
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, "p.login_error")
                    or "/hub/login" not in d.current_url
                ),
                "the login form was not answered",
            )

    def sign_in(self, login: str, password: str) -> None:
        """Single sign-on as a person does it: the hub's "Sign in with ..." button, the
        provider's login form (tests/testbed/oidc), its consent page; then back at the hub.
        """
        with self.step(f"sign in {login}"):
            self.driver.get(f"{self.base_url}/hub/login")
            self.visible("a[href*='oauth_login']").click()
            self.visible("#login").send_keys(login)
            self.visible("#password").send_keys(password)
            self.visible("#submit").click()
            self.visible("#approve").click()
            self.wait().until(lambda d: d.current_url.startswith(self.base_url),
                              "the provider did not send the browser back to the hub")

    def login_error(self) -> str | None:
        """The error the login page shows, or None when there is none."""
        found = self.driver.find_elements(By.CSS_SELECTOR, "p.login_error")
        return found[0].text.strip() if found else None

    def wait_for_lab(self, *, timeout: float = 180.0) -> None:
        """Wait through the spawn pages until JupyterLab shows its launcher."""
        with self.step("wait for JupyterLab"):
            self.visible(".jp-Launcher", timeout=timeout)

    def open_notebook(self, kernel: str, *, timeout: float = 60.0) -> None:
        """Click ``kernel``'s tile in the launcher's Notebook section; wait for the
        notebook's first cell to take input and the kernel to be idle."""
        with self.step(f"open notebook {kernel}"):
            tile = self.visible(
                f".jp-LauncherCard[data-category='Notebook'][title={_css_string(kernel)}]"
            )
            tile.click()
            self.visible(f"{_NOTEBOOK} .jp-Cell .cm-content", timeout=timeout)
            # The status bar names the active notebook's kernel and its state. (The
            # toolbar's execution indicator says "idle" before any kernel is attached, and
            # a cell run then is silently dropped.)
            idle = f"{kernel} | Idle"
            self.wait(timeout).until(
                lambda d: any(
                    e.text.strip() == idle
                    for e in d.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-TextItem")
                ),
                f"the status bar never said {idle!r}",
            )

    def run_cell(self, code: str, *, timeout: float = 60.0) -> str:
        """Type ``code`` into the active cell, run it with Shift+Enter, return the text of
        its output area once it has run. Typed as a person would: newlines are Enter, so
        the editor's auto-indent applies to multi-line code."""
        with self.step(f"run {code[:40]}"):
            cell = self.visible(f"{_NOTEBOOK} .jp-Cell.jp-mod-active")
            editor = cell.find_element(By.CSS_SELECTOR, ".cm-content")
            editor.click()
            editor.send_keys(code)
            keys = webdriver.ActionChains(self.driver)
            keys.key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            self.wait(timeout).until(
                lambda _: _RAN.search(cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text),
                f"the cell {code[:40]!r} did not finish running",
            )
            outputs = cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
            return "\n".join(o.text for o in outputs).strip()

    def open_link_in_new_tab(self, text: str, *, timeout: float | None = None) -> str:
        """Click the link whose text contains ``text`` in the active notebook's outputs,
        which JupyterLab opens in a new tab; switch to that tab once it has loaded and
        return its URL. ``tabs()[0]`` is where the session started."""
        with self.step(f"open link {text[:40]}"):
            before = set(self.driver.window_handles)
            links = f"{_NOTEBOOK} .jp-OutputArea-output a[href]"
            link = self.wait(timeout).until(
                lambda d: next(
                    (a for a in d.find_elements(By.CSS_SELECTOR, links) if text in a.text), None
                ),
                f"no link with {text!r} in the notebook's outputs",
            )
            assert link is not None  # until() returns only what is truthy
            link.click()
            self.wait(timeout).until(
                lambda d: set(d.window_handles) - before, f"{text!r} opened no new tab"
            )
            (handle,) = set(self.driver.window_handles) - before
            self.driver.switch_to.window(handle)
            self.wait(timeout).until(
                lambda d: d.execute_script("return document.readyState") == "complete",
                f"the tab for {text!r} did not finish loading",
            )
            return str(self.driver.current_url)

    def tabs(self) -> list[str]:
        return list(self.driver.window_handles)


@contextlib.contextmanager
def browser_session(
    *, base_url: str, trust: Trust | Sequence[Trust], artifacts: Path, timeout: float = 30.0
) -> Iterator[Browser]:
    """A headless Chromium with a fresh HOME (holding the NSS trust) and a fresh profile,
    both removed afterwards; failures leave their artifacts (and chromedriver's log) in
    ``artifacts``."""
    if missing := missing_tools():
        raise RuntimeError(
            f"the browser tests need {', '.join(missing)} "
            "(apt-get install chromium chromium-driver libnss3-tools)"
        )
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="e2e-browser-") as scratch:
        home, profile = Path(scratch, "home"), Path(scratch, "profile")
        make_nss_db(home, trust)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # --headless=new: no display on a CI machine; the new headless mode is the whole
        #   browser (same network and certificate code) without a window.
        # --user-data-dir: the fresh profile (cookies, cache, JupyterLab's local storage).
        # --window-size: a laptop's page, so the launcher and the screenshots look as a
        #   user's would (headless starts at 800x600).
        args = ["--headless=new", f"--user-data-dir={profile}", "--window-size=1366,900"]
        if os.geteuid() == 0:
            # Chromium will not start as root with its sandbox on, and the e2e tests run
            # as root (they enter the hosts' namespaces). The only sandbox flag given.
            args.append("--no-sandbox")
        for arg in args:
            options.add_argument(arg)
        # The console log is kept with a failure's artifacts.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Chromium finds the NSS database through HOME, which chromedriver passes on; no
        # other variable (no proxy settings: the hub is reached directly).
        service = Service(
            CHROMEDRIVER,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            log_output=str(artifacts / "chromedriver.log"),
        )
        started = time.monotonic()
        driver = webdriver.Chrome(service=service, options=options)
        browser = Browser(
            driver=driver, base_url=base_url.rstrip("/"), artifacts=artifacts, timeout=timeout
        )
        browser.timings["start browser"] = round(time.monotonic() - started, 2)
        try:
            yield browser
        except BaseException as exc:
            browser.keep_artifacts("the test's own check", exc)
            raise
        finally:
            driver.quit()
