"""Single sign-on for real: the hub on a namespace host logs people in through the bed's
OpenID Connect provider (panva's oidc-provider, tests/testbed/oidc), which this machine
runs on the bed's bridge.

The master (the host) reads the provider's discovery document itself, trusting the
provider's private CA from jupyterhub.oidc.ca_file; people go through the provider's login
and consent pages as a browser would (requests, every redirect followed, cookies kept),
and come back to the hub, which makes their Unix account at the first login.
"""

from __future__ import annotations

import html
import json
import re
import socket
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from provisioner.errors import RemoteError
from provisioner.hub import HubSettings, ensure_hub
from provisioner.hub.ca import ensure_ca
from provisioner.inventory import Inventory
from provisioner.inventory.names import SPARK_CLIENT_GROUP, SSO_GROUP
from provisioner.render import KERNEL_PATH
from provisioner.workflows.backup import check_archive, hub_users, restore_hub_users, take_backup
from provisioner.workflows.users import list_users
from tests.testbed.oidc.provider import running

from .browser import Trust, browser_session, missing_tools
from .conftest import wait_for
from .test_hub import HostShell, _inventory, hub_host  # noqa: F401
from .test_hub_backup import HostStream

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

BRIDGE = "10.77.0.1"  # this machine, as the bed's hosts reach it
CLIENT_ID = "sparkstack-e2e"
CLIENT_SECRET = "e2e-client-secret-0123456789abcdef"


def _account(name: str, groups: list[str], *, login: str | None = None) -> tuple[str, dict]:
    return login or name, {"password": f"{name}-pw",
                           "claims": {"preferred_username": name, "email": f"{name}@example.org",
                                      "groups": groups}}  # fmt: skip


ACCOUNTS = dict([
    _account("erin", ["spark-users"]),
    _account("grace", ["spark-users"]),  # signs in with a real browser
    _account("frank", ["spark-admins"]),
    _account("mallory", ["other-team"]),
    _account("alice", []),  # allowed by name (jupyterhub.users), admin by jupyterhub.admins
    _account("zed", ["spark-users"]),  # an account the host has, not made for the hub
    _account("daemon", ["spark-users"], login="svc"),  # a system account's name
])  # fmt: skip


def sso_port() -> int:
    """A free port on the bridge for the provider."""
    with socket.socket() as s:
        s.bind((BRIDGE, 0))
        return int(s.getsockname()[1])


def _sso_inventory(issuer: str, secret: Path, ca_file: Path | None) -> Inventory:
    inv = _inventory(["alice"], ["alice"])
    keys = {"issuer": issuer, "client_id": CLIENT_ID, "client_secret_file": secret,
            "scopes": ["openid", "profile", "email", "groups"],
            "allowed_groups": ["spark-users"], "admin_groups": ["spark-admins"],
            "ca_file": ca_file, "login_service": "the test bed"}  # fmt: skip
    oidc = inv.jupyterhub.oidc.model_copy(update=keys)
    hub = inv.jupyterhub.model_copy(update={"authenticator": "oidc", "oidc": oidc})
    return inv.model_copy(update={"jupyterhub": hub})


def _form(page: requests.Response, form_id: str) -> str:
    """The action of the page's form `form_id`, as a URL."""
    match = re.search(rf'<form[^>]*id="{form_id}"[^>]*action="([^"]+)"', page.text)
    assert match, (page.status_code, page.url, page.text[:500])
    return urljoin(page.url, html.unescape(match.group(1)))


def sign_in(hub: str, bundle: Path, login: str, password: str) -> tuple[requests.Session,
                                                                         requests.Response]:
    """A new browser session: the hub's login button, the provider's login and consent
    pages, back to the hub. Returns the session and the last answer."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.verify = str(bundle)
    page = session.get(hub + "hub/oauth_login", timeout=30)
    assert page.url.startswith("https://" + BRIDGE), page.url  # at the provider
    page = session.post(_form(page, "login-form"), data={"login": login, "password": password},
                        timeout=30)  # fmt: skip
    if page.status_code == 401:
        return session, page
    page = session.post(_form(page, "consent-form"), timeout=60)
    return session, page


def _whoami(hub: str, session: requests.Session) -> dict:
    answer = session.get(hub + "hub/api/user", timeout=30)
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    return answer.json()


def _unix(shell: HostShell, name: str) -> tuple[str, str] | None:
    """(home's mode, groups) of account `name` on the host, or None without one."""
    status, out, _ = shell.run(f"home=$(getent passwd {name} | cut -d: -f6) && "
                               f'stat -c %a "$home" && id -nG {name}', check=False)  # fmt: skip
    if status != 0:
        return None
    mode, groups = out.splitlines()
    return mode, " ".join(sorted(groups.split()))


def test_people_sign_in_through_the_provider_and_get_private_accounts(hub_host, tmp_path):  # noqa: F811
    host, shell = hub_host
    ip = host.fixed_ip
    hub = f"https://{ip}/"
    # An account the host has that the hub did not make, and the Spark group as `up`
    # makes it before the first login.
    shell.run("getent passwd zed >/dev/null || useradd --create-home zed; "
              f"getent group {SPARK_CLIENT_GROUP} >/dev/null || "
              f"groupadd --system {SPARK_CLIENT_GROUP}")  # fmt: skip
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "redirect_uris": [hub + "hub/oauth_callback"]}  # fmt: skip
    with running(ip=BRIDGE, port=sso_port(), client=client, accounts=ACCOUNTS,
                 workdir=tmp_path / "idp") as idp:  # fmt: skip
        # Without the provider's CA the master refuses its certificate, before any change
        # to the hub's config, and says where it looked.
        plain = _sso_inventory(idp.issuer, secret, None)
        with pytest.raises(RemoteError, match=r"cannot read the provider's https://10\.77\.0\.1"
                           r":\d+/\.well-known/openid-configuration: .*CERTIFICATE_VERIFY_FAILED"):
            ensure_hub(shell, HubSettings.from_inventory(plain, master_ip=ip), inv=plain)

        inv = _sso_inventory(idp.issuer, secret, idp.ca_file)
        settings = HubSettings.from_inventory(inv, master_ip=ip)
        ca = ensure_ca(tmp_path / "cluster", cluster="e2e-sso")
        first = ensure_hub(shell, settings, inv=inv, ca=ca, ready_timeout=120)
        sso = next(s for s in first.steps if s.name == "sso")
        assert sso.changed and f"provider {idp.issuer}" in sso.detail, str(sso)
        assert first.passwords == {}, "with single sign-on the hub hands out no password"
        # The client secret: root's alone on the master, and not in the config.
        _, mode, _ = shell.run(f"stat -c '%a %U' {settings.paths.oidc_secret}")
        assert mode.split() == ["600", "root"]
        assert CLIENT_SECRET.encode() not in shell.read(settings.paths.config)
        # Browsers trust the hub by the cluster's CA, and the provider by its own.
        bundle = tmp_path / "trust.pem"
        bundle.write_bytes(ca.cert_path.read_bytes() + idp.ca_file.read_bytes())
        login_page = requests.get(hub + "hub/login", verify=str(bundle), timeout=30)
        assert "Sign in with the test bed" in login_page.text

        # A wrong password never gets past the provider.
        _, page = sign_in(hub, bundle, "erin", "not-erin-pw")
        assert page.status_code == 401 and _unix(shell, "erin") is None

        # erin (group spark-users): in, with an account made now, private, in the groups.
        erin, page = sign_in(hub, bundle, "erin", "erin-pw")
        assert page.status_code == 200 and page.url.startswith(hub), (page.status_code, page.url)
        me = _whoami(hub, erin)
        assert (me["name"], me["admin"], me["groups"]) == ("erin", False, ["spark-users"])
        assert _unix(shell, "erin") == ("700", f"erin {SPARK_CLIENT_GROUP} {SSO_GROUP}")
        # her server starts as her (the hub spawned it on the way in)
        wait_for(lambda: shell.run("pgrep -u erin -f jupyterhub-singleuser",
                                   check=False)[0] == 0,
                 timeout=120, what="erin's server", interval=0.5)  # fmt: skip
        # Her next login (a new browser) finds her account as it is.
        _, page = sign_in(hub, bundle, "erin", "erin-pw")
        assert page.status_code == 200 and page.url.startswith(hub)
        assert _unix(shell, "erin") == ("700", f"erin {SPARK_CLIENT_GROUP} {SSO_GROUP}")

        # frank (group spark-admins) is an admin; alice by her name, admin by the inventory.
        frank, _ = sign_in(hub, bundle, "frank", "frank-pw")
        assert _whoami(hub, frank)["admin"] is True
        alice, _ = sign_in(hub, bundle, "alice", "alice-pw")
        assert _whoami(hub, alice)["admin"] is True

        # Refused, with no account made or handed out: no allowed group; the name of an
        # account the hub did not make; a system account's name.
        for login, name in (("mallory", "mallory"), ("zed", "zed"), ("svc", "daemon")):
            session, page = sign_in(hub, bundle, login, f"{name}-pw")
            assert page.status_code == 403, (login, page.status_code, page.url)
            assert "does not let your account in" in page.text
            assert session.get(hub + "hub/api/user", timeout=30).status_code == 403
        assert _unix(shell, "mallory") is None
        zed = _unix(shell, "zed")
        assert zed is not None and zed[1] == "zed", "zed's account as it was: no group added"
        assert shell.run("pgrep -u zed", check=False)[0] == 1

        # A person in a real browser (Chromium trusting the hub's and the provider's CAs,
        # nothing switched off): the first sign-on, JupyterLab, a PySpark notebook from
        # the launcher, and a cell that says whom it runs as and how private her home is.
        if missing := missing_tools():
            pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium "
                        "chromium-driver libnss3-tools", pytrace=False)  # fmt: skip
        kernel = json.loads(shell.read(KERNEL_PATH) or b"{}")["display_name"]
        artifacts = tmp_path / "browser"
        print(f"browser artifacts (kept when a step fails): {artifacts}")
        trust = [Trust(ca.cert_path, is_ca=True), Trust(idp.ca_file, is_ca=True)]
        with browser_session(base_url=hub, trust=trust, artifacts=artifacts) as browser:
            browser.sign_in("grace", "grace-pw")
            browser.wait_for_lab()
            browser.open_notebook(kernel)
            shown = browser.run_cell("import getpass, os\nprint(getpass.getuser(), "
                                     "oct(os.stat(os.path.expanduser('~')).st_mode & 0o777))")
            assert shown == "grace 0o700", shown
        assert _unix(shell, "grace") == ("700", f"grace {SPARK_CLIENT_GROUP} {SSO_GROUP}")

        # `down` keeps the work of the people single sign-on made accounts for, and
        # `up --restore` on a new master makes their accounts again and puts it back.
        for name in ("erin", "frank"):
            shell.run(f"runuser -u {name} -- sh -c 'echo {name}-work > ~/{name}.ipynb'")
        users = hub_users(shell, list(inv.jupyterhub.users))
        assert {"alice", "erin", "frank", "grace"} <= set(users) and "zed" not in users, users
        saved = take_backup(HostStream(shell), cluster="e2e-sso", users=users,
                            dest=tmp_path / "backups")  # fmt: skip
        assert saved.path is not None
        # the new master: no account or home of erin's yet (her server stopped first)
        shell.run("pkill -KILL -u erin; while pgrep -u erin >/dev/null; do sleep 0.2; done; "
                  "userdel --remove erin")  # fmt: skip
        assert _unix(shell, "erin") is None
        # and frank's name now an account the hub did not make: never restored into
        shell.run("pkill -KILL -u frank; while pgrep -u frank >/dev/null; do sleep 0.2; done; "
                  "userdel --remove frank && useradd --create-home frank")  # fmt: skip
        done = restore_hub_users(shell, check_archive(saved.path), inv=inv, path=saved.path)
        assert done.users.get("erin", 0) >= 1, done.lines()
        assert _unix(shell, "erin") == ("700", f"erin {SPARK_CLIENT_GROUP} {SSO_GROUP}")
        _, owned, _ = shell.run("stat -c %U /home/erin/erin.ipynb && cat /home/erin/erin.ipynb")
        assert owned.split() == ["erin", "erin-work"]
        assert "frank" not in done.users and "frank" in done.not_in_inventory, done.lines()
        assert shell.run("test -e /home/frank/frank.ipynb", check=False)[0] == 1

        # `sparkstack users list` names them, as people single sign-on let in.
        listed = {u.name: u.role for u in list_users(shell, inv=inv, settings=settings)}
        assert {n: listed.get(n) for n in ("alice", "erin", "grace", "zed", "mallory")} == {
            "alice": "admin", "erin": "sso", "grace": "sso", "zed": None, "mallory": None}

        # The same inventory again changes nothing, and the hub keeps running.
        again = ensure_hub(shell, settings, inv=inv, ca=ca, ready_timeout=120)
        assert not again.changed, [str(s) for s in again.steps if s.changed]
