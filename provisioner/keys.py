"""The cluster's files on this machine: its config and state directories and the SSH key
pair generated for it (kept 0600 until `down` removes the keypair it belongs to)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def config_dir(cluster: str, env: Mapping[str, str] | None = None) -> Path:
    """~/.config/sparkstack/<cluster>, respecting XDG_CONFIG_HOME."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "sparkstack" / cluster


def state_dir(cluster: str, env: Mapping[str, str] | None = None) -> Path:
    """~/.local/state/sparkstack/<cluster> (XDG_STATE_HOME): where the log goes."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "sparkstack" / cluster


def generated_key_path(key_dir: Path) -> Path:
    return key_dir / "id_ed25519"


def public_key_path(private_key: Path | str) -> Path:
    """Where ssh-keygen puts the public half of a private key: beside it, plus .pub."""
    path = Path(str(private_key)).expanduser()
    return path.with_name(path.name + ".pub")


def ensure_generated_key(key_dir: Path) -> str:
    """The cluster's own key pair, made once and kept 0600; returns the public key line."""
    # cryptography, not paramiko: paramiko cannot generate ed25519 keys.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = generated_key_path(key_dir)
    pub = path.with_suffix(".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(path, 0o600)
    pub.write_text(public.decode() + " sparkstack\n")
    log.info("generated key pair %s", path)
    return pub.read_text().strip()


def remove_generated_key(key_dir: Path) -> Path | None:
    """Delete the key pair files ensure_generated_key made, and their folder if that
    leaves it empty; a key the user named in the inventory is never under key_dir."""
    path = generated_key_path(key_dir)
    if not path.exists():
        return None
    path.unlink()
    path.with_suffix(".pub").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else of the user's is there
        key_dir.rmdir()
    return path


def credentials_path(key_dir: Path) -> Path:
    return key_dir / "credentials.toml"


def hub_ca_paths(key_dir: Path) -> tuple[Path, Path]:
    """The cluster's CA (provisioner.hub.ca): its certificate, and its key."""
    return key_dir / "hub-ca.crt", key_dir / "hub-ca.key"


def _toml_string(value: str) -> str:
    # JSON's string escapes are a subset TOML's basic strings accept.
    import json

    return json.dumps(value, ensure_ascii=False)


def save_credentials(
    key_dir: Path, *, url: str, fingerprint: str, passwords: Mapping[str, str], users: list[str]
) -> Path:
    """Merge new initial passwords into the cluster's credentials file (0600, written
    atomically); users no longer in the inventory are dropped from it."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = credentials_path(key_dir)
    known: dict[str, str] = {}
    if path.exists():
        known = dict(tomllib.loads(path.read_text()).get("users", {}))
    known.update(passwords)
    lines = [
        "# Initial passwords of the hub's users, as sparkstack set them; each user should",
        "# change theirs after the first login. Deleted by `sparkstack down`.",
        f"hub_url = {_toml_string(url)}",
        f"hub_certificate_sha256 = {_toml_string(fingerprint)}",
        "",
        "[users]",
        *(f"{name} = {_toml_string(known[name])}" for name in users if name in known),
    ]
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def remove_cluster_files(key_dir: Path) -> list[Path]:
    """What `down` removes besides the key pair: credentials, the hub's CA and recorded host
    keys (the first-use record, and the file `sparkstack ssh` hands to OpenSSH)."""
    removed = []
    for path in (credentials_path(key_dir), *hub_ca_paths(key_dir), key_dir / "known_hosts",
                 key_dir / "ssh_known_hosts"):
        if path.exists():
            path.unlink()
            removed.append(path)
    with contextlib.suppress(OSError):
        key_dir.rmdir()
    return removed
