"""`sparkstack users`: the hub's users as the master knows them, and a new password for one.

A password is made here, set on the master through a root :class:`Shell` (chpasswd on
stdin, as `up` sets initial ones) and kept in the cluster's 0600 credentials file; it is
never logged. Whether it is shown is the command's decision, not this module's.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import RemoteError, UserInputError
from provisioner.hub import HubSettings, Shell
from provisioner.hub.accounts import new_password, recorded_users, set_password, sso_members
from provisioner.hub.shell import MASTER, q
from provisioner.hub.tls import fingerprint
from provisioner.inventory import Inventory
from provisioner.keys import config_dir, credentials_path, save_credentials

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)


def check_hub_user(inv: Inventory, name: str) -> None:
    """A user error (exit 2) unless `name` is one of the inventory's hub users, and they
    log in with a password (not through single sign-on)."""
    if inv.jupyterhub.authenticator == "oidc":
        raise UserInputError(
            f"cluster {inv.cluster.name} logs people in through single sign-on: the hub "
            "keeps no passwords",
            hint=f"passwords are the provider's ({inv.jupyterhub.oidc.issuer}); reset "
            "them there",
        )
    users = list(inv.jupyterhub.users)
    if name in users:
        return
    known = ", ".join(users) if users else "none (jupyterhub.users is empty)"
    raise UserInputError(
        f"{name!r} is not a hub user of cluster {inv.cluster.name}",
        hint=f"the inventory's jupyterhub.users: {known}",
    )


@dataclass(frozen=True)
class Reset:
    user: str
    credentials: Path
    # never logged; the command shows it only on a terminal
    password: str = field(repr=False)


def reset_password(shell: Shell, *, inv: Inventory, settings: HubSettings, name: str) -> Reset:
    """A new password for the hub user `name`, set on the master and written to the
    credentials file (which also gets the hub's current URL and certificate fingerprint)."""
    check_hub_user(inv, name)
    password = new_password()
    if not set_password(shell, name, password):
        raise UserInputError(
            f"{name} is in the inventory but has no account on the master yet",
            resource=MASTER,
            hint="run `sparkstack up`: it makes new users' accounts with their passwords",
        )
    cert = shell.read(settings.paths.cert)
    if cert is None:
        raise RemoteError(
            f"the master has no hub certificate ({settings.paths.cert})",
            resource=MASTER,
            step="users reset",
            hint=f"{name}'s password was changed; run `sparkstack up` to repair the hub, "
            "then reset it again",
        )
    path = save_credentials(
        config_dir(inv.cluster.name),
        url=settings.url,
        fingerprint=fingerprint(cert),
        passwords={name: password},
        users=list(inv.jupyterhub.users),
    )
    log.info("new password for %s, kept in %s", name, path)
    return Reset(user=name, credentials=path, password=password)


@dataclass(frozen=True)
class HubUser:
    name: str
    # "admin", "user", "former" (was a hub user, removed from the inventory) or "sso"
    # (an account single sign-on made at the person's first login)
    role: str
    account: bool
    processes: int
    password_kept: bool

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "account": self.account,
            "processes": self.processes,
            "password_in_credentials_file": self.password_kept,
        }


# For each name given: "name exists processes" (exists 0/1).
_LIST = """\
for name in "$@"; do
  if uid=$(id -u -- "$name" 2>/dev/null); then
    echo "$name 1 $(pgrep -c -u "$uid" || true)"
  else
    echo "$name 0 0"
  fi
done
"""


def list_users(shell: Shell, *, inv: Inventory, settings: HubSettings) -> list[HubUser]:
    """The inventory's users, the former ones the master remembers and the accounts single
    sign-on made, with whether each has an account there, how many processes run as them,
    and whether the credentials file on this machine holds a password for them (never the
    password itself)."""
    record = set(recorded_users(shell, settings.paths.users_record))
    users = list(inv.jupyterhub.users)
    names = users + sorted(record - set(users))
    sso = set(sso_members(shell)) - set(names)
    names += sorted(sso)
    if not names:
        return []
    _, out, _ = shell.run("set -- " + " ".join(q(n) for n in names) + "\n" + _LIST)
    seen = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            seen[parts[0]] = (parts[1] == "1", int(parts[2]) if parts[2].isdigit() else 0)
    kept = _passwords_kept(inv)
    admins = set(inv.jupyterhub.admins)
    return [
        HubUser(
            name=n,
            role="admin" if n in admins else "user" if n in users else
                 "sso" if n in sso else "former",
            account=seen.get(n, (False, 0))[0],
            processes=seen.get(n, (False, 0))[1],
            password_kept=n in kept,
        )
        for n in names
    ]


def _passwords_kept(inv: Inventory) -> set[str]:
    path = credentials_path(config_dir(inv.cluster.name))
    if not path.exists():
        return set()
    try:
        return set(tomllib.loads(path.read_text()).get("users", {}))
    except (OSError, tomllib.TOMLDecodeError):
        return set()
