"""provisioner.remote against real OpenSSH servers (see conftest.py)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from provisioner import remote
from provisioner.errors import RemoteError
from provisioner.hostkeys import BEGIN_MARKER, END_MARKER, HostKey, parse_console
from provisioner.remote import HostKeys, Target
from tests.remote.conftest import ClientKey, JumpNet, Sshd, SshdFactory, free_port, keygen


def target(sshd: Sshd, name: str = "master") -> Target:
    return Target(name, sshd.address, "root", sshd.port)


def pinned(name: str, keys: list[HostKey]) -> HostKeys:
    return HostKeys.pinned({name: keys})


def soon(seconds: float) -> float:
    return time.monotonic() + seconds


# How late a wait may end past its deadline, or how long a failure that must not be retried
# may take: generous for a loaded 2-core machine, yet well below what the tests tell apart
# (paramiko's 15 s banner timeout, a 60 s deadline, a 60 s command).
SLACK = 10.0
# The early end a wait's last short attempt may cost: it never gives up sooner than this.
EARLY = 0.1


# --- host keys ---------------------------------------------------------------------------


def test_keys_read_from_a_console_log_let_the_connection_through(
    sshd: Sshd, client_key: ClientKey
) -> None:
    console = "\r\n".join(
        ["[   18.2] cloud-init[901]: Cloud-init v. 22.4.2 running 'modules:final'",
         BEGIN_MARKER, *(f"{k.key_type} {k.base64} root@master" for k in sshd.host_keys),
         END_MARKER, "[   19.0] cloud-init[901]: Cloud-init v. 22.4.2 finished"])
    keys = HostKeys.pinned()
    keys.pin("master", parse_console(console))
    with remote.connect(target(sshd), key_file=client_key.path, host_keys=keys) as s:
        result = s.run("echo hello; id -u")
    assert result == remote.Result(0, "hello\n0\n", "")


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ecdsa-sha2-nistp256"])
def test_one_pinned_key_of_either_type_is_enough(
    sshd: Sshd, client_key: ClientKey, key_type: str
) -> None:
    # Pinning only the ECDSA key must make the client ask the server for that type, not
    # fail because the server would rather show its ed25519 key.
    keys = [k for k in sshd.host_keys if k.key_type == key_type]
    with remote.connect(target(sshd), key_file=client_key.path,
                        host_keys=pinned("master", keys)) as s:
        assert s.run("true").status == 0


def test_wrong_pinned_key_is_refused_naming_both_fingerprints(
    sshd: Sshd, client_key: ClientKey, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "other", "ed25519")
    offered = next(k for k in sshd.host_keys if k.key_type == "ssh-ed25519")
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        # wait_ssh must not retry a host key mismatch: waiting cannot fix it
        remote.wait_ssh(target(sshd), key_file=client_key.path,
                        host_keys=pinned("master", [impostor]), deadline=soon(60))
    assert time.monotonic() - started < SLACK, "it waited for the deadline: a retry"
    message = caught.value.message
    assert "master" in message and f"[{sshd.address}]:{sshd.port}" in message
    assert impostor.fingerprint in message and offered.fingerprint in message
    assert caught.value.exit_code == 4 and caught.value.hint


def test_a_node_without_a_pinned_key_is_not_contacted(sshd: Sshd, client_key: ClientKey) -> None:
    with pytest.raises(RemoteError, match="no host key is pinned for master"):
        remote.connect(target(sshd), key_file=client_key.path,
                       host_keys=pinned("other-node", sshd.host_keys))
    assert "Connection from" not in sshd.log


def test_first_use_records_the_key_then_refuses_a_changed_one(
    sshd_factory: SshdFactory, client_key: ClientKey, tmp_path: Path
) -> None:
    first = sshd_factory.start("127.0.0.3")
    trust = HostKeys.first_use(tmp_path / "state")
    with remote.connect(target(first), key_file=client_key.path, host_keys=trust) as s:
        s.run("true")
    known_hosts = tmp_path / "state" / "known_hosts"
    recorded = known_hosts.read_text()
    name = f"[{first.address}]:{first.port}"
    assert recorded.split() in ([name, k.key_type, k.base64] for k in first.host_keys)
    # A second contact with the same server uses the record and adds nothing.
    with remote.connect(target(first), key_file=client_key.path, host_keys=trust) as s:
        s.run("true")
    assert known_hosts.read_text() == recorded

    first.stop()  # the "node is rebuilt": same address and port, new host keys
    second = sshd_factory.start(first.address, first.port)
    with pytest.raises(RemoteError, match="does not match") as caught:
        remote.connect(target(second), key_file=client_key.path,
                       host_keys=HostKeys.first_use(tmp_path / "state"))
    recorded_fp = next(k.fingerprint for k in first.host_keys if k.base64 in recorded)
    offered = [k.fingerprint for k in second.host_keys if k.fingerprint in caught.value.message]
    assert recorded_fp in caught.value.message and offered
    assert known_hosts.read_text() == recorded


def test_refused_client_key_fails_at_once(
    sshd: Sshd, tmp_path: Path
) -> None:
    stranger = tmp_path / "id_stranger"
    keygen(stranger, "ed25519")
    started = time.monotonic()
    with pytest.raises(RemoteError, match="refused our key"):
        remote.wait_ssh(target(sshd), key_file=stranger,
                        host_keys=pinned("master", sshd.host_keys), deadline=soon(60))
    assert time.monotonic() - started < SLACK, "it waited for the deadline: a retry"


# --- the jump through the master ---------------------------------------------------------


def test_worker_is_reached_only_through_the_master(
    jump_net: JumpNet, sshd_factory: SshdFactory, client_key: ClientKey
) -> None:
    master_sshd = sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns,
                                     forwarding=True)
    worker_sshd = sshd_factory.start(jump_net.worker_address, 22, netns=jump_net.worker_ns)
    # From here the worker's address is unroutable, as a worker without a floating IP is.
    with pytest.raises(OSError):
        socket.create_connection((jump_net.worker_address, 22), timeout=1).close()

    master = Target("master", jump_net.master_address, "root")
    worker = Target("worker-1", jump_net.worker_address, "root")
    trust = HostKeys.pinned({"master": master_sshd.host_keys,
                                  "worker-1": worker_sshd.host_keys})
    phases: list[tuple[str, str]] = []
    with remote.wait_ssh(master, key_file=client_key.path, host_keys=trust,
                         deadline=soon(5), on_phase=lambda *p: phases.append(p)) as via:
        remote.wait_tcp(worker, via=via, deadline=soon(5), on_phase=lambda *p: phases.append(p))
        with remote.wait_ssh(worker, key_file=client_key.path, host_keys=trust, via=via,
                             deadline=soon(5), on_phase=lambda *p: phases.append(p)) as w:
            # SSH_CONNECTION names the client as the worker saw it: the master's inner end.
            seen_from = w.run("echo $SSH_CONNECTION").stdout.split()[0]
            addresses = w.run("ip -4 -o addr show").stdout
    assert seen_from == jump_net.master_inner
    assert jump_net.worker_address in addresses
    assert phases == [("master", "ssh"), ("master", "connected"), ("worker-1", "tcp"),
                      ("worker-1", "ssh"), ("worker-1", "connected")]


def test_the_worker_key_is_checked_through_the_jump_too(
    jump_net: JumpNet, sshd_factory: SshdFactory, client_key: ClientKey, tmp_path: Path
) -> None:
    master_sshd = sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns,
                                     forwarding=True)
    worker_sshd = sshd_factory.start(jump_net.worker_address, 22, netns=jump_net.worker_ns)
    impostor = keygen(tmp_path / "impostor", "ed25519")
    trust = HostKeys.pinned({"master": master_sshd.host_keys, "worker-1": [impostor]})
    with remote.connect(Target("master", jump_net.master_address, "root"),
                        key_file=client_key.path, host_keys=trust) as via:
        with pytest.raises(RemoteError) as caught:
            remote.connect(Target("worker-1", jump_net.worker_address, "root"),
                           key_file=client_key.path, host_keys=trust, via=via)
        # the master session survives a refused worker
        assert via.run("true").status == 0
    worker_ed25519 = next(k for k in worker_sshd.host_keys if k.key_type == "ssh-ed25519")
    message = caught.value.message
    assert f"worker-1 ({jump_net.worker_address})" in message
    assert impostor.fingerprint in message and worker_ed25519.fingerprint in message


def test_wait_tcp_through_the_master_times_out_while_the_worker_is_down(
    jump_net: JumpNet, sshd_factory: SshdFactory, client_key: ClientKey
) -> None:
    master_sshd = sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns,
                                     forwarding=True)
    trust = HostKeys.pinned({"master": master_sshd.host_keys})
    with remote.connect(Target("master", jump_net.master_address, "root"),
                        key_file=client_key.path, host_keys=trust) as via:
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            remote.wait_tcp(Target("worker-1", jump_net.worker_address, "root"), via=via,
                            deadline=soon(1.0))
        took = time.monotonic() - started
    assert 1.0 - EARLY <= took < 1.0 + SLACK
    assert "worker-1" in caught.value.message and "through master" in caught.value.message


# --- commands and files ------------------------------------------------------------------


@pytest.fixture
def session(sshd: Sshd, client_key: ClientKey):
    with remote.connect(target(sshd), key_file=client_key.path,
                        host_keys=pinned("master", sshd.host_keys)) as s:
        yield s


def test_run_failure_raises_with_the_stderr_tail(session: remote.Session) -> None:
    command = "echo working; for i in $(seq 1 40); do echo line$i >&2; done; exit 3"
    with pytest.raises(RemoteError) as caught:
        session.run(command)
    error = caught.value
    assert "exit status 3" in error.message and "master" in error.message
    assert error.log_tail.splitlines()[-1] == "line40" and "line1\n" not in error.log_tail
    assert "line40" in error.render()
    result = session.run(command, check=False)
    assert (result.status, result.stdout) == (3, "working\n")


def test_run_feeds_input_and_times_out(session: remote.Session) -> None:
    assert session.run("cat; echo", input="from stdin").stdout == "from stdin\n"
    started = time.monotonic()
    with pytest.raises(RemoteError, match="did not finish within"):
        session.run("sleep 60", timeout=0.5)
    assert time.monotonic() - started < SLACK, "run waited for the command, not its timeout"
    assert session.run("echo still usable").stdout == "still usable\n"


def test_output_after_the_exit_status_is_kept(session: remote.Session) -> None:
    """sshd sends the exit status when the command exits and drains the pipe after it: the
    last output can come after the status (seen as a lost final newline on a busy
    machine). A child that outlives the shell for a moment makes that certain here."""
    assert session.run("(sleep 0.3; echo late) & echo early").stdout == "early\nlate\n"


def test_a_process_left_holding_the_output_does_not_hold_the_command(
    session: remote.Session,
) -> None:
    # no EOF until the sleep ends: `run` waits for it only a moment after the status
    started = time.monotonic()
    assert session.run("sleep 8 & echo started").stdout == "started\n"
    assert time.monotonic() - started < 6, "run waited for the process left behind"


def test_put_writes_a_secret_never_readable_by_others(
    session: remote.Session, tmp_path: Path
) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    path = directory / "cookie_secret"
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    # A large secret keeps the content landing long enough for the watcher to see the
    # temporary file while it fills (the sshd runs on this machine).
    secret = os.urandom(8 * 1024 * 1024)
    seen: list[os.stat_result] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(directory):
                with contextlib.suppress(FileNotFoundError):
                    seen.append(entry.stat(follow_symlinks=False))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        changed = session.put(str(path), secret, mode=0o600, owner="nobody", group=group)
    finally:
        done.set()
        watcher.join()
    assert changed is True
    assert path.read_bytes() == secret
    final = path.stat()
    assert (stat.S_IMODE(final.st_mode), final.st_uid, final.st_gid) == (
        0o600, nobody.pw_uid, nobody.pw_gid)
    filling = [s for s in seen if 0 < s.st_size < len(secret)]
    assert filling, "the watcher never saw the file while it was written"
    for st in seen:
        if st.st_size:
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0 and st.st_uid == nobody.pw_uid
    assert sorted(os.listdir(directory)) == ["cookie_secret"]  # no temporary left behind


def test_put_is_idempotent_and_reports_changes(session: remote.Session, tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "spark-defaults.conf"
    assert session.put(str(path), "spark.authenticate true\n", mode=0o640) is True
    inode = path.stat().st_ino
    assert session.put(str(path), "spark.authenticate true\n", mode=0o640) is False
    assert path.stat().st_ino == inode  # unchanged means untouched, not rewritten
    assert session.put(str(path), "spark.authenticate true\n", mode=0o600) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session.put(str(path), "spark.authenticate false\n", mode=0o600) is True
    assert path.read_text() == "spark.authenticate false\n"
    assert os.listdir(path.parent) == ["spark-defaults.conf"]


def test_put_into_a_missing_directory_fails_clearly(
    session: remote.Session, tmp_path: Path
) -> None:
    with pytest.raises(RemoteError, match="cannot write") as caught:
        session.put(str(tmp_path / "nowhere" / "file"), b"x")
    assert "No such file or directory" in caught.value.log_tail


def test_read_returns_content_or_none(session: remote.Session, tmp_path: Path) -> None:
    (tmp_path / "ready").write_bytes(b"\x00binary\xff")
    assert session.read(str(tmp_path / "ready")) == b"\x00binary\xff"
    assert session.read(str(tmp_path / "absent")) is None
    with pytest.raises(RemoteError, match="cannot read"):
        session.read(str(tmp_path))  # a directory exists but cannot be cat


# --- waiting -----------------------------------------------------------------------------


def test_wait_tcp_gives_up_at_its_deadline_when_nothing_listens() -> None:
    port = socket.socket()
    port.bind(("127.0.0.4", 0))  # held but never listened on: connections are refused
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            remote.wait_tcp(Target("master", "127.0.0.4", "root", port.getsockname()[1]),
                            deadline=soon(1.5))
        took = time.monotonic() - started
    finally:
        port.close()
    assert 1.5 - EARLY <= took < 1.5 + SLACK
    assert "did not open" in caught.value.message and "master" in caught.value.message
    assert caught.value.hint


def test_wait_ssh_gives_up_at_its_deadline_when_no_sshd_answers(client_key: ClientKey) -> None:
    # Accepts connections and never says a word: each attempt must be cut to the deadline,
    # not left to paramiko's 15 s banner timeout.
    listener = socket.create_server(("127.0.0.4", 0))
    try:
        node = Target("master", "127.0.0.4", "root", listener.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(RemoteError, match="could not log in") as caught:
            remote.wait_ssh(node, key_file=client_key.path, deadline=soon(1.5),
                            # any well-formed key: the server never gets to show one
                            host_keys=pinned("master", [client_key.public]))
        took = time.monotonic() - started
        attempts = accepted_so_far(listener)
    finally:
        listener.close()
    assert attempts >= 1, "wait_ssh never reached the silent server"
    assert 1.5 - EARLY <= took < 1.5 + SLACK  # the upper bound stays below the 15 s
    assert "master" in caught.value.message


def accepted_so_far(listener: socket.socket) -> int:
    """How many connections reached a listener that never accepted: the kernel queued each
    (closed since or not), so accepting them all now counts them."""
    listener.setblocking(False)
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            listener.accept()[0].close()
            count += 1
    return count


def test_wait_ssh_waits_for_a_server_that_starts_late(
    sshd_factory: SshdFactory, client_key: ClientKey
) -> None:
    port = free_port("127.0.0.5")
    started: list[Sshd] = []
    late = threading.Timer(0.8, lambda: started.append(sshd_factory.start("127.0.0.5", port)))
    late.start()
    trust = HostKeys.first_use(sshd_factory.root / "state")
    phases: list[str] = []
    try:
        with remote.wait_ssh(Target("master", "127.0.0.5", "root", port),
                             key_file=client_key.path, host_keys=trust, deadline=soon(60),
                             on_phase=lambda _node, phase: phases.append(phase)) as s:
            assert s.run("echo up").stdout == "up\n"
    finally:
        late.join()
    assert phases == ["ssh", "connected"]
