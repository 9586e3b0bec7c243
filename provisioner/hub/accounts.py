"""The hub users' Unix accounts on the master: creation with a password, private homes,
passwords set again, and nothing left running as a user who left the hub.

Steps in the sense of provisioner.hub.steps: each looks first and changes only what
differs; passwords reach chpasswd on stdin, never a command line.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field

from provisioner.hub.config import HubSettings
from provisioner.hub.shell import Shell, Step, q
from provisioner.inventory.names import SSO_GROUP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsersStep(Step):
    created: tuple[str, ...] = ()
    # Passwords of the accounts created in this run only; kept out of repr and logs.
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    # Accounts that were hub users once and are not in the settings any more.
    former: tuple[str, ...] = ()


def _existing_accounts(shell: Shell, names: list[str]) -> set[str]:
    if not names:
        return set()
    # getent exits 2 when some keys are missing and still prints the ones it found.
    _, out, _ = shell.run("getent passwd " + " ".join(q(n) for n in names), check=False)
    return {line.split(":", 1)[0] for line in out.splitlines() if ":" in line}


def recorded_users(shell: Shell, record: str) -> list[str]:
    """Every account the hub has ever served, as the root-only record at `record` names
    them (HubPaths.users_record); none when it is missing or damaged."""
    raw = shell.read(record)
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        names = []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def sso_members(shell: Shell) -> list[str]:
    """The accounts single sign-on made (the SSO group's members; none with PAM)."""
    _, out, _ = shell.run(f"getent group {SSO_GROUP} | cut -d: -f4", check=False)
    return [n for n in out.strip().split(",") if n]


def new_password() -> str:
    """A hub user's generated password: 15 random bytes, 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def set_password(shell: Shell, name: str, password: str) -> bool:
    """Give the existing account `name` a new password, as ensure_users gives new accounts
    theirs (chpasswd on stdin, never a command line); False if there is no such account."""
    if name not in _existing_accounts(shell, [name]):
        return False
    shell.run("chpasswd", input=f"{name}:{password}\n".encode())
    return True


def ensure_users(shell: Shell, settings: HubSettings) -> UsersStep:
    """A PAM account with a password for each hub user; accounts are never deleted.

    Passwords are made here and reach chpasswd on stdin (never a command line); they are
    returned only for accounts created in this run. Every account ever served is kept in
    a root-only record, so a user removed from the settings is recognised as former and
    blocked in the hub, while the account and its home stay.
    """
    p = settings.paths
    wanted = list(settings.users)
    existing = _existing_accounts(shell, wanted)
    created = [n for n in wanted if n not in existing]
    # With single sign-on the provider checks who people are: accounts get no password
    # (useradd leaves them locked), and the hub logs them in by the provider's word only.
    sso = settings.oidc is not None
    passwords = {} if sso else {n: new_password() for n in created}
    for name in created:
        # One command per account, so none is left without its password. A group of that
        # name may exist already (useradd --user-group then refuses).
        shell.run(
            "set -e\n"
            f"if getent group {q(name)} >/dev/null; then group='--gid {q(name)}';"
            " else group=--user-group; fi\n"
            f"useradd --create-home $group --shell /bin/bash {q(name)}\n"
            + ("" if sso else "chpasswd"),
            input=None if sso else f"{name}:{passwords[name]}\n".encode(),
        )
    record = set(recorded_users(shell, p.users_record))
    former = tuple(sorted(record - set(wanted)))
    record_changed = shell.put(
        p.users_record,
        (json.dumps(sorted(record | set(wanted))) + "\n").encode(),
        mode=0o600,
        owner="root",
        group="root",
    )
    parts = [f"created {', '.join(created)}"] if created else []
    if former:
        parts.append(f"former {', '.join(former)}")
    return UsersStep(
        "users",
        bool(created) or record_changed,
        "; ".join(parts) or f"{len(wanted)} accounts in place",
        created=tuple(created),
        passwords=passwords,
        former=former,
    )


def ensure_homes(shell: Shell, names: tuple[str, ...]) -> Step:
    """Each hub user's home 0700: nobody else lists or reads it (useradd leaves 0755 on
    many systems, and an older sparkstack did too). Changed only when a mode was fixed.

    A home is only touched when it is a directory its user owns, so an account that
    existed before the hub (a system user's /var/www, a shared /) is left as it is and
    named instead.
    """
    if not names:
        return Step("homes", False, "no users")
    script = (
        'for name in "$@"; do\n'
        '  home=$(getent passwd "$name" | cut -d: -f6)\n'
        '  if [ -z "$home" ] || [ "$home" = / ] || [ ! -d "$home" ] || [ -L "$home" ] ||'
        ' [ "$(stat -c %U "$home")" != "$name" ]; then echo "skipped:$name"; continue; fi\n'
        '  if [ "$(stat -c %a "$home")" != 700 ]; then'
        ' chmod 0700 "$home" && echo "fixed:$name"; fi\n'
        "done"
    )
    _, out, _ = shell.run(f"sh -c {q(script)} homes " + " ".join(q(n) for n in names))
    fixed = [w.split(":", 1)[1] for w in out.split() if w.startswith("fixed:")]
    skipped = [w.split(":", 1)[1] for w in out.split() if w.startswith("skipped:")]
    parts = [f"made private: {', '.join(fixed)}"] if fixed else []
    if skipped:
        log.warning(
            "hub: the home of %s is not a directory its user owns; left as it is",
            ", ".join(skipped),
        )
        parts.append(f"not a home its user owns, left as is: {', '.join(skipped)}")
    return Step("homes", bool(fixed), "; ".join(parts) or f"{len(names)} homes private")


# Every process of the former users named as arguments (never a system account, uid <
# 1000): SIGTERM, up to 10 s to exit, then SIGKILL. Prints the names it stopped.
_STOP_FORMER = """\
stopped=""
for name in "$@"; do
  uid=$(id -u -- "$name" 2>/dev/null) || continue
  [ "$uid" -ge 1000 ] || continue
  pgrep -u "$uid" >/dev/null || continue
  pkill -TERM -u "$uid" || true
  stopped="$stopped $uid"
  echo "$name"
done
tries=0
for uid in $stopped; do
  while pgrep -u "$uid" >/dev/null && [ "$tries" -lt 20 ]; do sleep 0.5; tries=$((tries + 1)); done
  pkill -KILL -u "$uid" 2>/dev/null || true
done
"""


def ensure_former_stopped(shell: Shell, former: tuple[str, ...]) -> Step:
    """Nothing left running as a former user: their notebook server, kernels, Spark
    driver, and whatever they started from a terminal in it.

    Run once the hub answers. JupyterHub stops a blocked user's server itself, but only
    when it starts (the restart for the new config does that, gracefully, and clears the
    server from its database and the proxy); this catches a hub that did not restart and
    processes the server did not own. The hub notices a server gone at its next poll.
    Signals, not the hub's API: none of the hub's tokens on the node may stop another
    user's server (smoke's and the culler's are scoped), and a token that could would be
    a standing admin credential for one rare step.
    """
    _, out, _ = shell.run(
        "set -u\nset -- " + " ".join(q(n) for n in former) + "\n" + _STOP_FORMER, timeout=60
    )
    stopped = out.split()
    idle = [n for n in former if n not in stopped]
    parts = [f"stopped {', '.join(stopped)}"] if stopped else []
    if idle:
        parts.append(f"nothing running as {', '.join(idle)}")
    return Step("former users", bool(stopped), "; ".join(parts))
