"""hostkeys.py: host keys out of console logs, fingerprints, the first-use known_hosts file."""

from __future__ import annotations

import pytest

from provisioner.errors import RemoteError
from provisioner.hostkeys import HostKey, KnownHosts, fingerprint, lookup_name, parse_console

# Real keys made by ssh-keygen, with the fingerprints `ssh-keygen -lf` printed for them.
ECDSA = HostKey(
    "ecdsa-sha2-nistp256",
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJbARZz/6uPj5+qaO0vz1ThhrrsNQuaO/o0bWn"
    "muersvte0En1AkEN7jT+/GI9D/XHpO8T2fCNlvV0IafdT6UOo=",
)
ECDSA_FP = "SHA256:HJluZwLKJvCg/q/4NaFh8F/UmZ+ijPL6SJ/sDqgmkvY"
ED25519 = HostKey("ssh-ed25519",
                  "AAAAC3NzaC1lZDI1NTE5AAAAII50dI8N4mXSLEBzSt5LoZ2KsiMigsq6XS759N1G5Kvg")
ED25519_FP = "SHA256:2YgWVmXMbEUmP9+w6FqHBtEdv64NDF+YJd49rO4ASyo"
# The same node after a rebuild: a new ed25519 key.
ED25519_NEW = HostKey("ssh-ed25519",
                      "AAAAC3NzaC1lZDI1NTE5AAAAINEsAPSNI754G9CDkrPcTt0ApIOiRI6357v8FmUQrW5m")
ED25519_NEW_FP = "SHA256:bDFCbLKpn4cQiLtzSYpbiFAjZXrQWUXDoRWjqPshdW4"


def block(*keys: HostKey, host: str = "master-1") -> list[str]:
    return ["-----BEGIN SSH HOST KEY KEYS-----",
            *(f"{k.key_type} {k.base64} root@{host}" for k in keys),
            "-----END SSH HOST KEY KEYS-----"]


# What Nova's console log of a Debian cloud image looks like around the block: kernel lines,
# cloud-init's fingerprints through logger (syslog priority prefix, "ec2:" on older
# versions), then the keys echoed as they are, everything with CRLF line ends.
BOOT = [
    "[    0.000000] Linux version 6.1.0-18-cloud-amd64 (debian-kernel@lists.debian.org)",
    "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.",
    "[   14.903521] cloud-init[612]: Cloud-init v. 22.4.2 running 'modules:final' at Mon, 01 "
    "Dec 2026 10:00:00 +0000. Up 14.80 seconds.",
    "<14>Dec  1 10:00:01 cloud-init: #############################################################",
    "<14>Dec  1 10:00:01 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
    f"<14>Dec  1 10:00:01 cloud-init: 256 {ECDSA_FP} root@master-1 (ECDSA)",
    f"<14>Dec  1 10:00:01 cloud-init: 256 {ED25519_FP} root@master-1 (ED25519)",
    "<14>Dec  1 10:00:01 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
    "<14>Dec  1 10:00:01 cloud-init: #############################################################",
]
FINISHED = ["[   15.412310] cloud-init[612]: Cloud-init v. 22.4.2 finished at Mon, 01 Dec 2026 "
            "10:00:01 +0000. Datasource DataSourceOpenStackLocal [net,ver=2].  Up 15.40 seconds"]


def console(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(console(*BOOT, *block(ECDSA, ED25519), *FINISHED), [ED25519, ECDSA],
                     id="one boot, ed25519 first whatever the printed order"),
        pytest.param("\n".join(block(ED25519)), [ED25519], id="bare LF block"),
        pytest.param(console(*BOOT, *block(ED25519), *FINISHED, "[    0.000000] Linux version",
                             *BOOT, *block(ED25519_NEW, ECDSA), *FINISHED),
                     [ED25519_NEW, ECDSA], id="two boots: the last block counts"),
        pytest.param(console(*block(ED25519), *BOOT, "-----BEGIN SSH HOST KEY KEYS-----",
                             f"ssh-ed25519 {ED25519_NEW.base64} root@master-1"),
                     [ED25519], id="last block cut off by the end of the log: not trusted"),
        pytest.param(console("-----BEGIN SSH HOST KEY KEYS-----",
                             f"ssh-ed25519 {ED25519_NEW.base64} root@master-1",
                             *block(ED25519)),
                     [ED25519], id="a BEGIN without END is dropped at the next BEGIN"),
        pytest.param(console(*BOOT, *FINISHED), [], id="not printed yet"),
        pytest.param("", [], id="empty console"),
        pytest.param(console("-----BEGIN SSH HOST KEY KEYS-----",
                             "[   15.100001] random: crng init done",
                             f"ecdsa-sha2-nistp256 {ECDSA.base64} root@master-1",
                             "[   15.100002] virtio_net virtio0 ens3: renamed from eth0",
                             f"ssh-ed25519 {ED25519.base64} root@master-1",
                             "-----END SSH HOST KEY KEYS-----"),
                     [ED25519, ECDSA], id="kernel lines between the keys"),
        pytest.param(console("-----BEGIN SSH HOST KEY KEYS-----",
                             f"ecdsa-sha2-nistp256 {ECDSA.base64} root@master-1",
                             f"ssh-ed25519 {ED25519.base64[:30]}[   15.2] kvm-clock: "
                             "cpu 1, msr 2:3",
                             f"{ED25519.base64[30:]} root@master-1",
                             "-----END SSH HOST KEY KEYS-----"),
                     [ECDSA], id="a key cut by a kernel message is dropped, the others kept"),
        pytest.param(console("-----BEGIN SSH HOST KEY KEYS-----",
                             f"ssh-ed25519 {ECDSA.base64} root@master-1",
                             "-----END SSH HOST KEY KEYS-----"),
                     [], id="blob of another type than its line says"),
        pytest.param(console("<14>Dec  1 10:00:01 ec2: -----BEGIN SSH HOST KEY KEYS-----",
                             f"<14>Dec  1 10:00:01 ec2: ssh-ed25519 {ED25519.base64} root@m",
                             f"<14>Dec  1 10:00:01 ec2: ssh-ed25519 {ED25519.base64} root@m",
                             "<14>Dec  1 10:00:01 ec2: -----END SSH HOST KEY KEYS-----"),
                     [ED25519], id="syslog prefixes, duplicated line"),
        pytest.param(console(*block(ED25519)).replace("\r\n", "\r\r\n"), [ED25519],
                     id="CR CR LF from a serial console"),
    ],
)
def test_parse_console(text: str, expected: list[HostKey]) -> None:
    assert parse_console(text) == expected


def test_parsed_keys_are_pairs_of_type_and_base64() -> None:
    (key,) = parse_console(console(*block(ED25519)))
    assert tuple(key) == ("ssh-ed25519", ED25519.base64)


@pytest.mark.parametrize(("key", "expected"), [(ECDSA, ECDSA_FP), (ED25519, ED25519_FP),
                                               (ED25519_NEW, ED25519_NEW_FP)])
def test_fingerprints_match_ssh_keygen(key: HostKey, expected: str) -> None:
    assert fingerprint(key.base64) == key.fingerprint == expected
    assert "=" not in expected


@pytest.mark.parametrize(("host", "port", "name"), [("203.0.113.7", 22, "203.0.113.7"),
                                                    ("10.0.0.5", 2222, "[10.0.0.5]:2222")])
def test_lookup_name_is_openssh_style(host: str, port: int, name: str) -> None:
    assert lookup_name(host, port) == name


def test_known_hosts_records_first_use_and_refuses_a_change(tmp_path) -> None:
    store = KnownHosts(tmp_path / "cluster")
    assert store.get("203.0.113.7") == []
    store.record("203.0.113.7", ED25519)
    store.record("[10.0.0.5]:2222", ECDSA)
    store.record("203.0.113.7", ED25519)  # the same key again is fine and adds nothing
    path = tmp_path / "cluster" / "known_hosts"
    before = path.read_text()
    assert before == (f"203.0.113.7 ssh-ed25519 {ED25519.base64}\n"
                      f"[10.0.0.5]:2222 ecdsa-sha2-nistp256 {ECDSA.base64}\n")
    # A fresh object reads what an earlier run recorded.
    again = KnownHosts(tmp_path / "cluster")
    assert again.get("203.0.113.7") == [ED25519]
    assert again.get("[10.0.0.5]:2222") == [ECDSA]
    with pytest.raises(RemoteError) as caught:
        again.record("203.0.113.7", ED25519_NEW)
    assert ED25519_FP in caught.value.message and ED25519_NEW_FP in caught.value.message
    assert str(path) in caught.value.hint
    assert path.read_text() == before


def test_known_hosts_reads_openssh_lines_it_did_not_write(tmp_path) -> None:
    (tmp_path / "known_hosts").write_text(
        "# managed by hand\n\n"
        f"203.0.113.7,master-1 ssh-ed25519 {ED25519.base64} comment\n"
        f"203.0.113.8 ecdsa-sha2-nistp256 {ECDSA.base64}")  # no final newline
    store = KnownHosts(tmp_path)
    assert store.get("master-1") == [ED25519]
    store.record("203.0.113.9", ED25519_NEW)
    assert store.get("203.0.113.8") == [ECDSA]
    assert store.get("203.0.113.9") == [ED25519_NEW]
