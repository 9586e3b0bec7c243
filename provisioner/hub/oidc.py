"""Single sign-on (jupyterhub.authenticator = "oidc"): the hub logs people in through an
OpenID Connect provider with oauthenticator's GenericOAuthenticator, and makes each one's
Unix account at their first login.

The provider's endpoints come from its discovery document, read by the master itself (the
provider may be reachable only from the cloud's network, and it is the master that must
reach it at every login). The client secret travels over SSH into a root-only file the
hub reads at start; the config names the file, never the secret.

Accounts: the hub (root) runs the add-user script of this module at a person's first
login, which makes the account with a private home in the SSO group and the Spark group.
A provider's user name that is already a Unix account sparkstack did not make for the hub
(debian, a service's user, a group's name) is refused: a provider must never hand out an
existing account, least of all one with sudo.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.errors import RemoteError
from provisioner.hub.shell import MASTER, Shell, Step, q
from provisioner.inventory.fields import UNIX_USER_RE
from provisioner.inventory.names import SPARK_CLIENT_GROUP, SSO_GROUP
from provisioner.inventory.oidc import OidcConfig
from provisioner.render import VENV

log = logging.getLogger(__name__)

DISCOVERY = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class OidcEndpoints:
    """What the hub needs from the provider's discovery document."""

    issuer: str
    authorize: str
    token: str
    userinfo: str


def callback_note(oidc: OidcConfig, *, hub_root: str | None) -> str:
    """What `up` and its dry run say with single sign-on: the redirect URI the provider
    must know. ``hub_root``: the hub's URL when the address is known already."""
    root = hub_root or "https://<the master's floating IP>/"
    known = "" if hub_root else " (the address is known once `up` has attached it)"
    return (f"single sign-on through {oidc.issuer}: register the redirect URI "
            f"{root}hub/oauth_callback for client {oidc.client_id} at the provider{known}")


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + DISCOVERY


# Run by the master's venv Python: the discovery document, or why not, as one JSON line.
# argv: the document's URL, then the CA bundle to trust ("" for the system's store).
_DISCOVER = """\
import json, ssl, sys, urllib.request
url, ca = sys.argv[1], sys.argv[2] or None
try:
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(url, context=ctx, timeout=20) as answer:
        doc = json.load(answer)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
except Exception as exc:
    print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
else:
    print(json.dumps(doc))
"""


def parse_discovery(issuer: str, text: str) -> OidcEndpoints:
    """The endpoints of the master's answer, or RemoteError saying what is wrong."""
    url = discovery_url(issuer)
    hint = ("check jupyterhub.oidc.issuer, that the master reaches the provider, and for a "
            "private CA set jupyterhub.oidc.ca_file; then run `sparkstack up` again")
    try:
        doc = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        doc = {"error": f"no answer ({text.strip()[-200:]!r})"}
    if "error" in doc:
        raise RemoteError(f"the master cannot read the provider's {url}: {doc['error']}",
                          resource=MASTER, step="hub sso", hint=hint)  # fmt: skip
    # OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer it was
    # asked for, or it may be another provider's.
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise RemoteError(
            f"{url} names the issuer {doc.get('issuer')!r}, not {issuer!r}",
            resource=MASTER, step="hub sso",
            hint="set jupyterhub.oidc.issuer to exactly the issuer the provider names",
        )  # fmt: skip
    keys = {"authorize": "authorization_endpoint", "token": "token_endpoint",
            "userinfo": "userinfo_endpoint"}  # fmt: skip
    found = {ours: doc.get(theirs) for ours, theirs in keys.items()}
    bad = [keys[ours] for ours, value in found.items()
           if not (isinstance(value, str) and value.startswith("https://"))]
    if bad:
        raise RemoteError(
            f"{url} gives no https:// {' or '.join(bad)}",
            resource=MASTER, step="hub sso",
            hint="the hub needs the provider's authorization, token and userinfo endpoints",
        )  # fmt: skip
    return OidcEndpoints(issuer=issuer, **{k: str(v) for k, v in found.items()})


def discover(shell: Shell, oidc: OidcConfig, *, ca_path: str | None) -> OidcEndpoints:
    """The provider's endpoints, as the master reads them (with the CA it will trust)."""
    assert oidc.issuer is not None
    _, out, err = shell.run(
        f"{VENV}/bin/python - {q(discovery_url(oidc.issuer))} {q(ca_path or '')}",
        input=_DISCOVER.encode(), timeout=60, check=False,
    )  # fmt: skip
    return parse_discovery(oidc.issuer, out or err)


# The hub (root) runs this with the new user's name at their first login. The name has
# passed the hub's username_pattern and the config's check that no such account exists;
# this checks again, and refuses a name that is a group's (useradd would make the account
# a member of that group: "sudo", "adm", "docker").
ADD_USER = f"""\
#!/bin/sh
# Written by sparkstack: makes a hub user's Unix account at their first single sign-on.
set -eu
name=${{1:?a user name}}
if ! printf '%s\\n' "$name" | grep -Eqx '{UNIX_USER_RE.pattern}'; then
  echo "refused: $name is not a valid user name" >&2; exit 2
fi
if getent passwd "$name" >/dev/null; then echo "refused: account $name exists" >&2; exit 3; fi
if getent group "$name" >/dev/null; then echo "refused: $name is a group" >&2; exit 4; fi
groups={SSO_GROUP}
if getent group {SPARK_CLIENT_GROUP} >/dev/null; then groups="$groups,{SPARK_CLIENT_GROUP}"; fi
useradd --create-home --user-group --groups "$groups" --shell /bin/bash "$name"
home=$(getent passwd "$name" | cut -d: -f6)
chmod 0700 "$home"
echo "created $name ($home)"
"""


# The post-auth hook of single sign-on: runs as root in the hub, after the provider and
# the allowed names and groups let a person in, before the hub knows them as a user.
_SSO_ACCOUNT_HOOK = """\
import asyncio, grp, pwd


async def _unix_account(authenticator, handler, authentication):
    \"\"\"The person's Unix account: made at their first login; an existing account only if
    sparkstack made it for the hub (an inventory user or an earlier sign-on).\"\"\"
    name = authentication["name"]
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = await asyncio.create_subprocess_exec(
            ADD_USER, name, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await made.communicate()
        text = out.decode(errors="replace").strip()
        if made.returncode != 0:
            authenticator.log.error("no account for %s: %s", name, text)
            return None
        authenticator.log.info("%s", text)
        return authentication
    try:
        sso = grp.getgrnam(SSO_GROUP).gr_mem
    except KeyError:
        sso = []
    if name in INVENTORY_USERS or name in sso:
        return authentication
    authenticator.log.warning(
        "refused %s: a Unix account sparkstack did not make for the hub has that name", name)
    return None


c.Authenticator.post_auth_hook = _unix_account
"""


def sso_config_lines(oidc: OidcConfig, endpoints: OidcEndpoints, *, callback: str,
                     users: Iterable[str], admins: Iterable[str], secret_path: str,
                     ca_path: str, add_user_path: str) -> list[str]:
    """jupyterhub_config.py's lines for single sign-on: GenericOAuthenticator with the
    provider's endpoints, the allowed and admin groups as JupyterHub groups, and the
    account hook. ``callback``: the redirect URI; the paths: HubPaths.sso_files.

    Not LocalGenericOAuthenticator: its LocalAuthenticator half reads allowed_groups as
    Unix groups (and fails on a person with no account yet); the hook makes accounts."""
    gen = "c.GenericOAuthenticator"
    lines = [
        f"# Single sign-on through {oidc.issuer} (OpenID Connect); the client secret is",
        "# read from a root-only file. Endpoints as the provider's discovery document gave.",
        'c.JupyterHub.authenticator_class = "generic-oauth"',
        f"{gen}.login_service = {repr(oidc.login_service)}",
        f"{gen}.client_id = {repr(oidc.client_id)}",
        f"{gen}.client_secret = Path({repr(secret_path)}).read_text().strip()",
        f"{gen}.oauth_callback_url = {repr(callback)}",
        f"{gen}.authorize_url = {repr(endpoints.authorize)}",
        f"{gen}.token_url = {repr(endpoints.token)}",
        f"{gen}.userdata_url = {repr(endpoints.userinfo)}",
        f"{gen}.scope = {repr(list(oidc.scopes))}",
        f"{gen}.username_claim = {repr(oidc.username_claim)}",
        # PKCE as well as the secret (RFC 9700 asks it of confidential clients too).
        f"{gen}.enable_pkce = True",
        # A name the provider gives must be a valid Unix name as it is: never mapped.
        f"c.Authenticator.username_pattern = {repr('^' + UNIX_USER_RE.pattern + '$')}",
        f"{gen}.custom_403_message = "
        + repr("Your sign-on worked, but this hub does not let your account in: ask its admins."),
    ]
    if oidc.ca_file is not None:
        lines.append(f"{gen}.http_request_kwargs = {repr({'ca_certs': ca_path})}")
    if oidc.allowed_groups or oidc.admin_groups:
        lines += [
            f"{gen}.manage_groups = True",
            f"{gen}.auth_state_groups_key = {repr('oauth_user.' + oidc.groups_claim)}",
            f"{gen}.allowed_groups = set({repr(sorted(oidc.allowed_groups))})",
            f"{gen}.admin_groups = set({repr(sorted(oidc.admin_groups))})",
        ]
        if oidc.admin_groups:
            # admin_groups decides admin at every login, revoking it from non-members:
            # the inventory's admins are named so they stay admins.
            lines.append(f"c.Authenticator.admin_users = set({repr(sorted(admins))})")
    lines += [
        "",
        f"ADD_USER = {repr(add_user_path)}",
        f"SSO_GROUP = {repr(SSO_GROUP)}",
        f"INVENTORY_USERS = set({repr(sorted(users))})",
        *_SSO_ACCOUNT_HOOK.splitlines(),
        "",
    ]
    return lines


def ensure_sso(shell: Shell, oidc: OidcConfig, *, secret_path: str, ca_path: str,
               add_user_path: str) -> tuple[Step, OidcEndpoints]:
    """The client secret (0600 root), the provider's CA if the inventory names one, the
    SSO group and the add-user script on the master; then the provider's endpoints, read
    by the master. Changed when a file the hub reads at start changed."""
    wrote = []
    if shell.put(secret_path, (oidc.client_secret() + "\n").encode(), mode=0o600,
                 owner="root", group="root"):  # fmt: skip
        wrote.append("client secret")
    if oidc.ca_file is not None:
        if shell.put(ca_path, oidc.ca_file.read_bytes(), mode=0o644, owner="root",
                     group="root"):  # fmt: skip
            wrote.append("provider's CA")
    elif _removed(shell, ca_path):
        wrote.append("provider's CA removed")
    if shell.put(add_user_path, ADD_USER.encode(), mode=0o755, owner="root", group="root"):
        wrote.append("add-user script")
    _, out, _ = shell.run(f"getent group {SSO_GROUP} >/dev/null || "
                          f"{{ groupadd --system {SSO_GROUP} && echo made; }}")  # fmt: skip
    if out.strip() == "made":
        wrote.append(f"group {SSO_GROUP}")
    endpoints = discover(shell, oidc, ca_path=ca_path if oidc.ca_file else None)
    detail = ("wrote " + ", ".join(wrote) + "; " if wrote else "") + f"provider {oidc.issuer}"
    return Step("sso", bool(wrote), detail), endpoints


def ensure_no_sso(shell: Shell, *, secret_path: str, ca_path: str, add_user_path: str) -> Step:
    """Without single sign-on, nothing of it left on the master: the client secret above
    all. The accounts it made and their group stay (their homes are people's work)."""
    removed = _removed(shell, secret_path, ca_path, add_user_path)
    return Step("sso", bool(removed), ("removed " + ", ".join(removed)) if removed else "off")


def _removed(shell: Shell, *paths: str) -> list[str]:
    """Those of `paths` that were there, now removed."""
    words = " ".join(q(p) for p in paths)
    _, out, _ = shell.run(f'for f in {words}; do [ -e "$f" ] && rm -f "$f" && echo "$f"; '
                          "done; true")  # fmt: skip
    return out.split()
