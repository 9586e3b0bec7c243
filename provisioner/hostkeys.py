"""SSH host keys as data: read from a server's console, fingerprinted, remembered on first use.

Pure: no paramiko, no network. remote.py turns these into pinned keys for its connections.

Why the console: cloud-init's keys_to_console module prints the node's public host keys
between `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----` late in
boot, and Nova hands the console log to whoever owns the server. That lets the first SSH
connection verify the host instead of trusting whatever answers on port 22.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

from provisioner.errors import RemoteError

log = logging.getLogger(__name__)

BEGIN_MARKER = "-----BEGIN SSH HOST KEY KEYS-----"
END_MARKER = "-----END SSH HOST KEY KEYS-----"

# The types cloud-init can print (it prints every /etc/ssh/ssh_host_*_key.pub not filtered by
# ssh_key_console_blacklist). Matching anywhere in the line tolerates prefixes such as a
# syslog tag or a timestamp that some images add to console lines.
_KEY_RE = re.compile(
    r"(?P<type>ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521))\s+(?P<b64>AAAA[A-Za-z0-9+/]+={0,2})"
)

# OpenSSH prefers ed25519; listing it first makes the SSH client negotiate that type.
_PREFERENCE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
               "ecdsa-sha2-nistp521", "ssh-rsa")


class HostKey(NamedTuple):
    """One public host key: its type (`ssh-ed25519`) and its base64 blob, as in a .pub file."""

    key_type: str
    base64: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.base64)

    def line(self, name: str) -> str:
        """This key as a known_hosts line for `name`."""
        return f"{name} {self.key_type} {self.base64}"


def fingerprint(b64: str) -> str:
    """OpenSSH's `SHA256:` fingerprint of a base64 public key blob (unpadded, as ssh-keygen -l)."""
    digest = hashlib.sha256(base64.b64decode(b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def lookup_name(host: str, port: int = 22) -> str:
    """The name OpenSSH and paramiko file a host's key under: the host, or `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def _well_formed(key_type: str, b64: str) -> bool:
    """True when the blob decodes and names its own type first, as the SSH wire format does.

    A console is shared with the kernel, whose messages can land in the middle of a key line;
    such a line still matches the regex but its blob is cut or has the wrong length.
    """
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(blob) < 4:
        return False
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size] == key_type.encode("ascii") and len(blob) > 4 + size


def parse_console(text: str) -> list[HostKey]:
    """The host keys of the LAST complete BEGIN/END block in a console log, best type first.

    A node that rebooted (or was rebuilt) prints a block per boot and only the last one is
    current; a block cut off by the end of the log is not trusted. Returns [] when no
    complete block is there yet (cloud-init prints it at the very end of boot).
    """
    last: list[HostKey] | None = None
    current: list[HostKey] | None = None
    for raw in text.replace("\r", "\n").split("\n"):
        if BEGIN_MARKER in raw:
            current = []  # a BEGIN without its END before it is an interrupted boot: drop it
            continue
        if END_MARKER in raw:
            if current is not None:
                last = current
            current = None
            continue
        if current is None:
            continue
        match = _KEY_RE.search(raw)
        if match is None:
            continue
        key = HostKey(match["type"], match["b64"])
        if not _well_formed(*key):
            log.debug("ignoring a garbled %s line on the console", key.key_type)
        elif key not in current:
            current.append(key)
    if not last:
        return []
    rank = {t: i for i, t in enumerate(_PREFERENCE)}
    return sorted(last, key=lambda k: rank.get(k.key_type, len(rank)))


class KnownHosts:
    """The "first-use" trust store: an OpenSSH-format known_hosts file in a directory we own.

    The first key a name presents is recorded; afterwards that name is held to the recorded
    keys, and a change is refused rather than re-recorded (the user removes the line after
    checking, as with OpenSSH). The file is usable with `ssh -o UserKnownHostsFile=...`.
    """

    FILENAME = "known_hosts"

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.FILENAME
        # Workers are contacted in parallel threads; one lock keeps read-modify-write whole.
        self._lock = threading.Lock()

    def _entries(self) -> list[tuple[str, HostKey]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not fields[0].startswith("#"):
                for name in fields[0].split(","):
                    entries.append((name, HostKey(fields[1], fields[2])))
        return entries

    def get(self, name: str) -> list[HostKey]:
        """The keys recorded for `name` (a host or `[host]:port`), [] if never seen."""
        with self._lock:
            return [key for known, key in self._entries() if known == name]

    def record(self, name: str, key: HostKey) -> None:
        """Remember `key` for `name` if nothing is recorded for it; refuse a different one."""
        with self._lock:
            known = [k for n, k in self._entries() if n == name]
            if key in known:
                return
            if known:
                raise RemoteError(
                    f"host key for {name} changed: recorded {known[0].key_type} "
                    f"{known[0].fingerprint}, offered {key.key_type} {key.fingerprint}",
                    resource=name,
                    step="ssh",
                    hint=f"if the node was really rebuilt, delete its line from {self.path}",
                )
            self._append(key.line(name))
        log.info("recorded host key %s for %s in %s", key.fingerprint, name, self.path)

    def _append(self, line: str) -> None:
        # Write a whole new file and rename it over the old, so a crash never leaves half a
        # line that would later read as a different key.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            old = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = ""
        if old and not old.endswith("\n"):
            old += "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".known_hosts.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(old + line + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
