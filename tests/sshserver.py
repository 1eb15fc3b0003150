"""An in-process SSH server for tests: real shell commands, SFTP, optional forwarding.

Use it inside the test body (never hold it across a fixture's ``yield``)::

    async with running_ssh_server(tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}) as server:
        transport = SSHTransport(server.options(max_channels=4))
        ...

Every exec request runs as a real ``/bin/sh -c <command>`` child process (in its own
process group, working directory ``<tmp_path>/sshserver-<n>/home``) with the extra
environment given, stdin/stdout/stderr piped through the channel and its exit status
sent back. Any user name is accepted with the generated client key; nothing else is.
SFTP sees this machine's file system (use absolute paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncssh

from schedulerd.drivers.ssh import SSHOptions

_STOP_GRACE = 5.0
# a hard deadline (it fails the test): generous, for a loaded CI machine
_DROP_DEADLINE = 30.0
_CHUNK = 65536
_instances = itertools.count(1)


class _ServerSide(asyncssh.SSHServer):
    """One per accepted connection: tracks it, rejects it while paused, gates forwarding."""

    def __init__(self, harness: SSHTestServer) -> None:
        self._harness = harness
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        harness = self._harness
        if harness.paused:
            harness.rejected_connections += 1
            conn.abort()
            return
        self._conn = conn
        harness.connection_count += 1
        harness._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._harness._connections.discard(self._conn)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        self._harness.forward_requests.append((dest_host, dest_port))
        # Tests talk only to this machine: never forward anywhere else.
        return self._harness.allow_forwarding and dest_host in ("127.0.0.1", "localhost")


@dataclass(eq=False)
class SSHTestServer:
    """A running in-process SSH server and what it has seen."""

    directory: Path
    env: dict[str, str]
    allow_forwarding: bool
    host_key_path: Path
    client_key_path: Path
    known_hosts_path: Path
    home: Path
    port: int = 0
    exec_count: int = 0
    active_sessions: int = 0
    max_concurrent_sessions: int = 0
    connection_count: int = 0
    rejected_connections: int = 0
    paused: bool = False
    commands: list[str] = field(default_factory=list)
    forward_requests: list[tuple[str, int]] = field(default_factory=list)
    _connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    _children: set[asyncio.subprocess.Process] = field(default_factory=set)
    _acceptor: asyncssh.SSHAcceptor | None = None
    _idle: anyio.Event = field(default_factory=anyio.Event)

    @property
    def live_connections(self) -> int:
        return len(self._connections)

    def options(self, **overrides: Any) -> SSHOptions:
        """Options that reach this server with the client key and its known_hosts line.

        Test-friendly defaults: no connect-rate limit, short timeouts and backoff.
        """
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "tester",
            "identity_files": (str(self.client_key_path),),
            "known_hosts": str(self.known_hosts_path),
            "connect_timeout": 5.0,
            "min_connect_interval": 0.0,
            "backoff_initial": 0.5,
            "backoff_max": 2.0,
        }
        settings.update(overrides)
        return SSHOptions(**settings)

    def pause(self) -> None:
        """Reject every new connection (it is cut before the SSH handshake)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def drop_connections(self) -> None:
        """Abort every live connection, as a network blip would."""
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        with anyio.fail_after(_DROP_DEADLINE):
            for conn in connections:
                await conn.wait_closed()

    # --- exec requests -------------------------------------------------------------------

    async def _handle_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command
        if command is None:
            process.stderr.write(b"this test server runs exec requests only\n")
            process.exit(1)
            return
        self.exec_count += 1
        self.commands.append(command)
        self.active_sessions += 1
        self.max_concurrent_sessions = max(self.max_concurrent_sessions, self.active_sessions)
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        status = 255
        try:
            status = await self._run_child(process, command)
        except Exception as exc:
            with contextlib.suppress(Exception):
                process.stderr.write(f"sshserver: {exc!r}\n".encode())
        finally:
            self.active_sessions -= 1
            if self.active_sessions == 0:
                self._idle.set()
        with contextlib.suppress(Exception):
            process.exit(status)

    async def _run_child(self, process: asyncssh.SSHServerProcess[bytes], command: str) -> int:
        child = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.env},
            cwd=self.home,
            start_new_session=True,
        )
        self._children.add(child)
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            assert child.stderr is not None
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(_feed_stdin, process, child.stdin)
                helpers.start_soon(_kill_when_closed, process, child)
                async with anyio.create_task_group() as outputs:
                    outputs.start_soon(_copy_output, child.stdout, process.stdout)
                    outputs.start_soon(_copy_output, child.stderr, process.stderr)
                returncode = await child.wait()
                helpers.cancel_scope.cancel()
        finally:
            await _reap(child)
            self._children.discard(child)
        return returncode if returncode >= 0 else 128 - returncode

    # --- lifecycle -----------------------------------------------------------------------

    async def _start(self) -> None:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(str(self.host_key_path))
        client_key = asyncssh.generate_private_key("ssh-ed25519", comment="sshserver-client")
        client_key.write_private_key(str(self.client_key_path))
        client_key.write_public_key(f"{self.client_key_path}.pub")
        self.client_key_path.chmod(0o600)
        authorized_keys = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        self._idle.set()
        self._acceptor = await asyncssh.create_server(
            lambda: _ServerSide(self),
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized_keys,
            process_factory=self._handle_process,
            sftp_factory=True,
            allow_scp=False,
            encoding=None,
        )
        self.port = self._acceptor.get_port()
        public = host_key.export_public_key().decode().split()
        self.known_hosts_path.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")

    async def _stop(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._acceptor is not None:
                self._acceptor.close()
            for conn in list(self._connections):
                conn.abort()
            for child in list(self._children):
                _kill_group(child)
            with anyio.move_on_after(_STOP_GRACE):
                for conn in list(self._connections):
                    await conn.wait_closed()
                await self._idle.wait()
            for child in list(self._children):
                await _reap(child)
            if self._acceptor is not None:
                await self._acceptor.wait_closed()


@contextlib.asynccontextmanager
async def running_ssh_server(
    tmp_path: Path, *, env: dict[str, str] | None = None, allow_forwarding: bool = False
) -> AsyncIterator[SSHTestServer]:
    """Start an SSH server on 127.0.0.1 (free port) for the duration of the block."""
    directory = tmp_path / f"sshserver-{next(_instances)}"
    home = directory / "home"
    home.mkdir(parents=True)
    server = SSHTestServer(
        directory=directory,
        env=dict(env or {}),
        allow_forwarding=allow_forwarding,
        host_key_path=directory / "ssh_host_ed25519_key",
        client_key_path=directory / "id_ed25519",
        known_hosts_path=directory / "known_hosts",
        home=home,
    )
    try:
        await server._start()
        yield server
    finally:
        await server._stop()


async def _feed_stdin(
    process: asyncssh.SSHServerProcess[bytes], child_stdin: asyncio.StreamWriter
) -> None:
    try:
        while data := await process.stdin.read(_CHUNK):
            child_stdin.write(data)
            await child_stdin.drain()
    except (OSError, asyncssh.Error, asyncssh.SignalReceived):
        pass  # the child stopped reading, the channel went away, or a signal came
    finally:
        child_stdin.close()
        with contextlib.suppress(OSError):
            await child_stdin.wait_closed()


async def _copy_output(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while data := await source.read(_CHUNK):
        try:
            sink.write(data)
            await sink.drain()
        except (OSError, asyncssh.Error):
            # The channel is gone: keep draining so the child never blocks on a full pipe.
            continue


async def _kill_when_closed(
    process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
) -> None:
    await process.channel.wait_closed()
    _kill_group(child)


def _kill_group(child: asyncio.subprocess.Process) -> None:
    """Kill the child's whole process group (the shell and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


async def _reap(child: asyncio.subprocess.Process) -> None:
    with anyio.CancelScope(shield=True):
        if child.returncode is None:
            _kill_group(child)
        await child.wait()
