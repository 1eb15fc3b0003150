"""The real OpenSSH server for tests that must prove we work against it.

``with running_sshd(tmp_path) as sshd:`` starts ``/usr/sbin/sshd -D -e -f <config>`` on a
free 127.0.0.1 port with its own host key and an authorized_keys file for a generated
client key, for the current user only (root in CI; as any other user sshd can only log
that same user in). The block gets an object with ``port``, ``known_hosts_path``,
``client_key_path``, ``user`` and ``options()``; at exit sshd is stopped by its pid
(SIGTERM, then SIGKILL) and the test fails if it is still there.

A missing sshd is a broken test environment, not a reason to skip: tests using this fail
with a message saying so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schedulerd.drivers.ssh import SSHOptions

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class RunningSSHD:
    port: int
    pid: int
    user: str
    directory: Path
    host_key_path: Path
    client_key_path: Path
    known_hosts_path: Path
    log_path: Path

    def options(self, **overrides: Any) -> SSHOptions:
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_files": (str(self.client_key_path),),
            "known_hosts": str(self.known_hosts_path),
            "connect_timeout": 10.0,
            "min_connect_interval": 0.0,
            "backoff_initial": 0.5,
            "backoff_max": 2.0,
        }
        settings.update(overrides)
        return SSHOptions(**settings)


@contextlib.contextmanager
def running_sshd(tmp_path: Path) -> Iterator[RunningSSHD]:
    if not os.path.exists(SSHD):
        pytest.fail(
            f"{SSHD} not found: .ci/run must install openssh-server "
            "(the real-sshd tests never skip)",
            pytrace=False,
        )
    directory = tmp_path / "sshd"
    directory.mkdir()
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key = directory / "ssh_host_ed25519_key"
    client_key = directory / "id_ed25519"
    for key, comment in ((host_key, "sshd-host"), (client_key, "sshd-client")):
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            check=True,
            capture_output=True,
        )
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir

    log_path = directory / "sshd.log"
    proc: subprocess.Popen[bytes] | None = None
    port = 0
    for _ in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        config = directory / "sshd_config"
        config.write_text(_sshd_config(directory, port, user, host_key, authorized_keys))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if _wait_until_listening(proc, port):
            break
        _stop(proc)
        proc = None
    if proc is None:
        pytest.fail(f"sshd did not start; its log:\n{log_path.read_text()}", pytrace=False)

    known_hosts = directory / "known_hosts"
    public = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    try:
        yield RunningSSHD(
            port=port,
            pid=proc.pid,
            user=user,
            directory=directory,
            host_key_path=host_key,
            client_key_path=client_key,
            known_hosts_path=known_hosts,
            log_path=log_path,
        )
    finally:
        _stop(proc)


def _sshd_config(directory: Path, port: int, user: str, host_key: Path, keys: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys}",
            f"AllowUsers {user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM sshd, SIGKILL it if it lingers, then make sure it (and its group) is gone."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=_STOP_TIMEOUT)
    # per-connection sshd processes left by a test that did not close its transport
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        raise AssertionError(f"sshd (pid {proc.pid}) is still running after SIGKILL")
