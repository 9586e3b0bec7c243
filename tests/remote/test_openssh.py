"""The command lines `sparkstack ssh|logs|tunnel` give the system's ssh client, run against
real sshds: a worker reached only through the master, the remote exit code returned, a
host key other than the pinned one refused (for the worker too), and nothing written to
the user's own ~/.ssh."""

from __future__ import annotations

import subprocess
from pathlib import Path

from provisioner import openssh
from provisioner.hostkeys import HostKey

from .conftest import ClientKey, JumpNet, SshdFactory, keygen


def _client(tmp_path: Path, key: ClientKey, master_address: str,
            keys: dict[str, list[HostKey]]) -> openssh.Client:  # fmt: skip
    known = openssh.write_known_hosts(tmp_path / "cluster" / openssh.KNOWN_HOSTS, keys)
    return openssh.Client(
        user="root", key_file=key.path, known_hosts=known,
        master=openssh.Hop("m", master_address), binary=openssh.ssh_binary(),
    )  # fmt: skip


def _run(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(home)})  # fmt: skip


def test_a_command_on_the_worker_through_the_master_returns_its_exit_code(
    jump_net: JumpNet, sshd_factory: SshdFactory, client_key: ClientKey, tmp_path: Path
) -> None:
    master = sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns,
                                forwarding=True)  # fmt: skip
    worker = sshd_factory.start(jump_net.worker_address, 22, netns=jump_net.worker_ns)
    client = _client(tmp_path, client_key, jump_net.master_address, {
        jump_net.master_address: master.host_keys, jump_net.worker_address: worker.host_keys,
    })  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    done = _run(client.argv(openssh.Hop("w", jump_net.worker_address),
                            command="echo $SSH_CONNECTION; exit 7"), home)  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert done.stdout.split()[0] == jump_net.master_inner  # it came through the master
    on_master = _run(client.argv(client.master, command="true"), home)
    assert on_master.returncode == 0, on_master.stderr
    assert not (home / ".ssh").exists()


def test_a_worker_with_another_host_key_is_refused(
    jump_net: JumpNet, sshd_factory: SshdFactory, client_key: ClientKey, tmp_path: Path
) -> None:
    master = sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns,
                                forwarding=True)  # fmt: skip
    sshd_factory.start(jump_net.worker_address, 22, netns=jump_net.worker_ns)
    impostor = keygen(tmp_path / "impostor", "ed25519")
    client = _client(tmp_path, client_key, jump_net.master_address, {
        jump_net.master_address: master.host_keys, jump_net.worker_address: [impostor],
    })  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    done = _run(client.argv(openssh.Hop("w", jump_net.worker_address), command="echo IN"),
                home)  # fmt: skip
    assert done.returncode == 255 and "IN" not in done.stdout
    assert "host key" in done.stderr.lower(), done.stderr


def test_the_master_itself_is_held_to_its_pinned_key(
    sshd_factory: SshdFactory, client_key: ClientKey, tmp_path: Path
) -> None:
    sshd = sshd_factory.start()
    impostor = keygen(tmp_path / "impostor", "ed25519")
    client = _client(tmp_path, client_key, sshd.address, {})
    argv = client.argv(client.master, extra=["-p", str(sshd.port)], command="echo IN")
    openssh.write_known_hosts(client.known_hosts, {f"[{sshd.address}]:{sshd.port}": [impostor]})
    done = _run(argv, tmp_path)
    assert done.returncode == 255 and "IN" not in done.stdout
    # with the real key pinned the same command goes through
    known = client.known_hosts
    known.write_text("".join(f"[{sshd.address}]:{sshd.port} {k.key_type} {k.base64}\n"
                             for k in sshd.host_keys))  # fmt: skip
    assert _run(argv, tmp_path).stdout.strip() == "IN"
