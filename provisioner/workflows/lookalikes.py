"""Resources that look like the cluster's and are not: never used, changed or deleted.

Servers, ports and security groups carry the cluster's identity (tags, metadata or
description); the reader lists the ones that only have its names. A Nova keypair can
carry nothing but its public key, so `sparkstack-<cluster>` is the cluster's only when
that key is the one this machine holds for it (generated, or the .pub beside
ssh.private_key): a keypair someone else made under that name would otherwise let their
key into every node.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from provisioner import plan as P
from provisioner.keys import generated_key_path, public_key_path

log = logging.getLogger(__name__)


def own_public_key(desired: P.Desired, key_dir: Path) -> str:
    """The public key this machine holds for the cluster's keypair ("" if none)."""
    if desired.key_source == "import":
        path = Path(desired.public_key_file)
    else:
        path = public_key_path(generated_key_path(key_dir))
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def same_key(a: str, b: str) -> bool:
    """Whether two OpenSSH public key lines hold the same key (the comment may differ)."""
    return a.split()[:2] == b.split()[:2] and len(a.split()) >= 2


def foreign_keypair(desired: P.Desired, observed: P.Observed, key_dir: Path) -> str:
    """Why the keypair named like the cluster's is not the cluster's ("" if it is, or if
    there is none). With no key on this machine it is the cluster's only if the cluster
    has servers already (made from another machine, which holds the key)."""
    kp = observed.keypair
    if not desired.keypair_managed or kp is None:
        return ""
    own = own_public_key(desired, key_dir)
    if own and same_key(own, kp.detail):
        return ""
    if not own and observed.nodes:
        return ""
    why = "its public key is not this cluster's" if own else "this machine holds no key for it"
    return f"keypair {kp.name} ({why})"


def separate(
    desired: P.Desired, observed: P.Observed, key_dir: Path
) -> tuple[P.Observed, list[str]]:
    """The observation without the foreign keypair, and every look-alike found."""
    found = list(observed.lookalikes)
    keypair = foreign_keypair(desired, observed, key_dir)
    if keypair:
        found.append(keypair)
        observed = dataclasses.replace(observed, keypair=None)
    for what in found:
        log.warning("not the cluster's, left alone: %s", what)
    return observed, found


def refusals(found: list[str], cluster: str) -> list[str]:
    return [
        f"{what} has cluster {cluster}'s name but is not the cluster's: sparkstack will not "
        "use, change or delete it; rename or delete it yourself, or pick another cluster.name"
        for what in found
    ]


def left(found: list[str], cluster: str) -> list[str]:
    return [
        f"left {what}: it has cluster {cluster}'s name but is not the cluster's" for what in found
    ]
