"""The SSH transport: one asyncssh connection per head, channels multiplexed over it.

``SSHTransport`` opens its connection lazily on the first call and shares it between
every caller; at most ``max_channels`` sessions (commands or SFTP) are open on it at
once. When the connection is lost the next call reconnects. Failed connection attempts
put the transport into a jittered exponential backoff during which calls fail at once
with :class:`~schedulerd.errors.TransportError` (a poller simply skips that round);
``available_at`` and ``last_error`` say when it will try again and why it failed.

Host keys are checked against a known_hosts file (the user's ``~/.ssh/known_hosts`` by
default). A key the file does not know is refused unless ``accept_unknown_host_keys``;
a key that differs from the one recorded for the host is always refused. Keys accepted
as unknown are remembered for the life of the transport, so a later reconnection to a
different key is refused as well.

A command that exceeds its timeout raises ``TransportError``; its channel is closed
(after a best-effort SIGKILL request). OpenSSH does not kill a command without a pty
when its channel closes (nor does it honour the signal request), so on a real head a
timed-out command would go on running. So once per connection the transport asks
whether the head has a ``timeout(1)`` that takes ``-k`` (coreutils, newer busybox), and
if so runs every command as ``exec timeout -k 5 SECS sh -c COMMAND`` with SECS no more than
the daemon's own timeout: the head ends what the daemon gave up on (TERM, then KILL five
seconds later, to the command's whole process group). Without one, commands run as
they are. (timeout(1) stops watching once its own child has ended: a background process
that ignores TERM and outlives the command's shell is beyond its reach.)

Authentication uses the given key files and the ssh-agent at ``SSH_AUTH_SOCK`` (or the
default key files when none are given). ``~/.ssh/config`` is not read: every setting
comes from :class:`SSHOptions`, so a daemon behaves the same whoever starts it.

Longer than ~500 lines because it is one thing, the SSH transport: connection, backoff,
host-key policy, bounded commands and file transfer share one connection's state, and
each of their awaits is bounded here (the shared pieces -- private folders, the command
result -- are in :mod:`schedulerd.drivers.transport`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import random
import shlex
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self, cast

import anyio
import asyncssh
import structlog

from schedulerd.drivers.transport import CommandResult, make_private_dirs
from schedulerd.errors import ConfigError, TransportError
from schedulerd.state.retry import retry_delay

_CLOSE_GRACE = 5.0  # seconds to wait for a connection to finish closing
_CHANNEL_CLOSE_GRACE = 2.0  # seconds to wait for the head to confirm a channel's close
_COMMAND_PREVIEW = 200  # characters of a command quoted in error messages
_TRANSFER_CHUNK = 1 << 20  # bytes per SFTP read/write call (asyncssh splits them further)
_KILL_GRACE = 5  # seconds between timeout(1)'s TERM and its KILL on the head
#: asks the head's login shell whether ``timeout -k`` works (one command per connection)
TIMEOUT_PROBE = "timeout -k 1 10 true && echo schedulerd-timeout-ok"
_TIMEOUT_EXITS = (124, 128 + 9)  # timeout(1) ended the command (TERM; KILL after -k)

_logger = structlog.get_logger(__name__)

_SSH_ERRORS: tuple[type[BaseException], ...] = (
    asyncssh.Error,
    OSError,  # includes TimeoutError and ConnectionError
    asyncssh.KeyImportError,
    asyncssh.KeyEncryptionError,
    EOFError,
)


@dataclass(frozen=True, slots=True)
class SSHOptions:
    """How to reach one head node.

    ``known_hosts`` is a path; ``None`` means the user's ``~/.ssh/known_hosts``.
    ``jump_host`` is ``[user@]host[:port]``; the jump connection uses ``jump_identity_files``
    and ``jump_known_hosts`` when given, else the same files as the head.
    ``min_connect_interval`` is the least time between two connection attempts (a rate
    limit for a connection that keeps dropping); ``backoff_initial``/``backoff_max``
    bound the jittered exponential wait after failed attempts. ``transfer_timeout`` bounds
    one SFTP upload or download.
    """

    host: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    accept_unknown_host_keys: bool = False
    jump_host: str | None = None
    jump_identity_files: tuple[str, ...] | None = None
    jump_known_hosts: str | None = None
    max_channels: int = 8  # below OpenSSH's default MaxSessions (10)
    connect_timeout: float = 15.0
    keepalive_interval: float = 30.0
    keepalive_count_max: int = 3
    min_connect_interval: float = 2.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    transfer_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("ssh: host must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"ssh {self.host}: port {self.port} out of range")
        if self.max_channels < 1:
            raise ConfigError(f"ssh {self.host}: max_channels must be at least 1")
        if self.connect_timeout <= 0 or self.transfer_timeout <= 0:
            raise ConfigError(f"ssh {self.host}: timeouts must be positive")
        if self.min_connect_interval < 0 or self.backoff_initial < 0:
            raise ConfigError(f"ssh {self.host}: intervals must not be negative")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(f"ssh {self.host}: backoff_max is below backoff_initial")
        if self.jump_host is not None:
            parse_jump_host(self.jump_host)


def parse_jump_host(spec: str) -> tuple[str | None, str, int]:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``) -> ``(user, host, port)``."""
    user: str | None = None
    rest = spec.strip()
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        user = user or None
    port = 22
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise ConfigError(f"jump host {spec!r}: missing ']'")
        if tail:
            if not tail.startswith(":"):
                raise ConfigError(f"jump host {spec!r}: expected ':port' after ']'")
            port = _parse_port(spec, tail[1:])
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _parse_port(spec, port_text)
    else:
        host = rest
    if not host:
        raise ConfigError(f"jump host {spec!r}: no host name")
    return user, host, port


def _parse_port(spec: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"jump host {spec!r}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"jump host {spec!r}: port {port} out of range")
    return port


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One SSH server to connect to (the head, or the jump host in front of it)."""

    role: str  # "head" or "jump host", for messages
    host: str
    port: int
    user: str | None
    identity_files: tuple[str, ...]  # user-expanded
    known_hosts: str  # user-expanded path

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


class _StaleConnection(Exception):
    """The shared connection was found closed before a channel could be opened on it."""


class _HostKeyPolicy(asyncssh.SSHClient):
    """Decides on host keys the known_hosts file does not list, and notes disconnects.

    asyncssh accepts keys listed for the host by itself and asks
    ``validate_host_public_key`` about any other key; this says yes only to a host the
    file does not know at all, and only when unknown keys are allowed.
    """

    def __init__(
        self,
        transport: SSHTransport,
        endpoint: _Endpoint,
        known_hosts: asyncssh.SSHKnownHosts,
        known_hosts_path: str,
    ) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._known_hosts = known_hosts
        self._known_hosts_path = known_hosts_path
        self.problem: str | None = None
        self.established = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        fingerprint = key.get_fingerprint()
        pinned = self._transport._pinned_keys.get((self._endpoint.host, self._endpoint.port))
        if pinned is not None:
            if key == pinned:
                return True
            self.problem = (
                f"the server's key {fingerprint} differs from the key {pinned.get_fingerprint()} "
                "accepted earlier for this host (possible man-in-the-middle); refusing"
            )
            return False
        match = asyncssh.match_known_hosts(
            self._known_hosts, host, addr, None if port == 22 else port
        )
        listed_keys, ca_keys = match[0], match[1]
        if listed_keys or ca_keys:
            self.problem = (
                f"the server's key {fingerprint} does NOT match the key recorded for this "
                f"host in {self._known_hosts_path} (possible man-in-the-middle, or the host "
                "was reinstalled); refusing"
            )
            return False
        if not self._transport.options.accept_unknown_host_keys:
            self.problem = (
                f"the server's key {fingerprint} is unknown: {self._known_hosts_path} has no "
                "entry for this host; add one (ssh-keyscan) or set accept_unknown_host_keys"
            )
            return False
        self._transport._pinned_keys[(self._endpoint.host, self._endpoint.port)] = key
        self._transport._log.warning(
            "ssh_unknown_host_key_accepted",
            role=self._endpoint.role,
            endpoint=self._endpoint.label,
            fingerprint=fingerprint,
        )
        return True

    def auth_completed(self) -> None:
        self.established = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.established:
            self._transport._note_disconnect(self._endpoint, exc)


class SSHTransport:
    """Runs commands and copies files on one head over a single shared SSH connection."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self._head = _Endpoint(
            "head",
            options.host,
            options.port,
            options.user,
            _expand_all(options.identity_files),
            _expand_known_hosts(options.known_hosts),
        )
        self._jump: _Endpoint | None = None
        if options.jump_host is not None:
            jump_user, jump_host, jump_port = parse_jump_host(options.jump_host)
            self._jump = _Endpoint(
                "jump host",
                jump_host,
                jump_port,
                jump_user if jump_user is not None else options.user,
                _expand_all(
                    options.jump_identity_files
                    if options.jump_identity_files is not None
                    else options.identity_files
                ),
                _expand_known_hosts(
                    options.jump_known_hosts
                    if options.jump_known_hosts is not None
                    else options.known_hosts
                ),
            )
        self._log = _logger.bind(host=options.host, port=options.port)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._bastion: asyncssh.SSHClientConnection | None = None
        self._connect_lock = anyio.Lock()
        self._channels = anyio.Semaphore(options.max_channels)
        self._pinned_keys: dict[tuple[str, int], asyncssh.SSHKey] = {}
        self._random = random.Random()
        self._failures = 0
        self._last_attempt: float | None = None
        self._closed = False
        #: the connection whose head has a usable ``timeout -k`` (see the module docstring)
        self._timeout_conn: asyncssh.SSHClientConnection | None = None
        #: ``time.monotonic()`` value before which no connection attempt is made.
        self.available_at = 0.0
        #: Why the last connection attempt failed or the connection was lost; None when fine.
        self.last_error: str | None = None
        #: Connection attempts made so far (successful or not), for status and tests.
        self.connect_attempts = 0

    # --- status ------------------------------------------------------------------------

    @property
    def label(self) -> str:
        via = f" via {self._jump.label}" if self._jump is not None else ""
        return f"{self._head.label}{via}"

    @property
    def connected(self) -> bool:
        """Whether a live connection is open right now."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def in_backoff(self) -> bool:
        return time.monotonic() < self.available_at

    # --- Transport protocol ------------------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        input: str | None = None,
        # the command's own deadline: it also bounds timeout(1) on the head, which a
        # caller's fail_after could not
        timeout: float = 60.0,  # noqa: ASYNC109
    ) -> CommandResult:
        """Run ``command`` through the head's login shell; a non-zero exit is no error.

        A connection found dead when the channel is opened (the head never saw the
        command) is replaced and the command tried once more on the new one; a command
        that may have started is never run twice.
        """
        data = input.encode() if input else None
        try:
            return await self._run_once(command, data, timeout)
        except _StaleConnection:
            pass
        try:
            return await self._run_once(command, data, timeout)
        except _StaleConnection as exc:
            raise TransportError(
                f"ssh {self.label}: connection lost before the command started: {_preview(command)}"
            ) from exc.__cause__

    async def _run_once(self, command: str, data: bytes | None, limit: float) -> CommandResult:
        conn = await self._connection()
        wrapped = conn is self._timeout_conn
        remote_limit = float(int(limit)) if limit >= 1 else round(limit, 3)
        sent = wrap_in_timeout(command, remote_limit) if wrapped else command
        async with self._channels:
            process: asyncssh.SSHClientProcess[bytes] | None = None
            try:
                started = time.monotonic()
                deadline = started + limit
                with anyio.fail_after(limit):
                    process = await conn.create_process(
                        sent,
                        input=data,
                        stdin=asyncssh.PIPE if data else asyncssh.DEVNULL,
                        encoding=None,
                    )
                completed = await process.wait(
                    check=False, timeout=max(0.0, deadline - time.monotonic())
                )
            except TimeoutError as exc:
                raise TransportError(
                    f"ssh {self.label}: command timed out after {limit:g}s: {_preview(command)}"
                ) from exc
            except asyncssh.ChannelOpenError as exc:
                if process is None and conn.is_closed():
                    raise _StaleConnection from exc
                raise TransportError(
                    f"ssh {self.label}: cannot open a channel ({_describe(exc)}): "
                    f"{_preview(command)}"
                ) from exc
            except _SSH_ERRORS as exc:
                raise TransportError(
                    f"ssh {self.label}: command did not complete ({_describe(exc)}): "
                    f"{_preview(command)}"
                ) from exc
            finally:
                if process is not None:
                    await self._close_channel(process)
        exit_status = completed.returncode
        if exit_status is None:
            raise TransportError(
                f"ssh {self.label}: command ended without an exit status (connection lost?): "
                f"{_preview(command)}"
            )
        if exit_status < 0:  # killed by a signal: report it as a shell would
            exit_status = 128 - exit_status
        if (
            wrapped
            and exit_status in _TIMEOUT_EXITS
            and time.monotonic() - started >= max(0.0, remote_limit - 0.5)
        ):
            # the head's timeout(1) came first: the same as our own timeout
            raise TransportError(
                f"ssh {self.label}: command timed out after {limit:g}s: {_preview(command)}"
            )
        return CommandResult(_decode(completed.stdout), _decode(completed.stderr), exit_status)

    async def _probe_timeout(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Whether this head's ``timeout -k`` works (once per connection; never fatal)."""
        try:
            with anyio.fail_after(self.options.connect_timeout):
                async with self._channels:
                    result = await conn.run(TIMEOUT_PROBE, check=False, stdin=asyncssh.DEVNULL)
        except _SSH_ERRORS as exc:  # TimeoutError is an OSError
            self._log.warning("ssh_timeout_probe_failed", error=_describe(exc))
            return False
        usable = result.exit_status == 0 and "schedulerd-timeout-ok" in _decode(result.stdout)
        self._log.info("ssh_remote_timeout", available=usable)
        return usable

    async def upload(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to the head over SFTP, creating the remote parent folders
        (0700). The copy gets the local file's mode (never wider); whatever was at
        ``remote_path`` is removed first, so a symlink there is never written through."""

        async def put(sftp: asyncssh.SFTPClient) -> None:
            parent = posixpath.dirname(remote_path)
            if parent and parent != "/":
                await sftp.makedirs(parent, attrs=asyncssh.SFTPAttrs(permissions=0o700),
                                    exist_ok=True)  # fmt: skip
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(remote_path)
            async with await anyio.open_file(local_path, "rb") as source:
                mode = stat.S_IMODE((await anyio.Path(local_path).stat()).st_mode)
                # created owner-only (O_EXCL: a link planted meanwhile makes it fail),
                # given the source's mode once written
                target = await sftp.open(remote_path, "xb", _private(mode), encoding=None)
                async with target:
                    while chunk := await source.read(_TRANSFER_CHUNK):
                        await target.write(chunk)
                    await target.chmod(mode)

        await self._transfer(f"upload {local_path} -> {remote_path}", put)

    async def download(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the head over SFTP, creating the local parent folders
        (0700). The copy gets the remote file's mode (never wider); whatever was at
        ``local_path`` is replaced, never written through."""

        async def get(sftp: asyncssh.SFTPClient) -> None:
            async with await sftp.open(remote_path, "rb", encoding=None) as source:
                attrs = await source.stat()
                mode = stat.S_IMODE(attrs.permissions if attrs.permissions is not None else 0o600)
                target = await anyio.to_thread.run_sync(_create_private, local_path, mode)
                async with target:
                    # encoding=None: the SFTP file reads bytes
                    while chunk := cast(bytes, await source.read(_TRANSFER_CHUNK)):
                        await target.write(chunk)
                    await anyio.to_thread.run_sync(os.fchmod, target.wrapped.fileno(), mode)

        try:
            await anyio.to_thread.run_sync(make_private_dirs, os.path.dirname(local_path))
        except OSError as exc:
            raise TransportError(
                f"ssh {self.label}: download {remote_path}: cannot create the local folder "
                f"for {local_path}: {exc}"
            ) from exc
        await self._transfer(f"download {remote_path} -> {local_path}", get)

    async def _transfer(
        self, action: str, operation: Callable[[asyncssh.SFTPClient], Awaitable[None]]
    ) -> None:
        """Run one SFTP operation in its own session (copies are safe to repeat)."""
        for attempt in (1, 2):
            conn = await self._connection()
            started = False
            async with self._channels:
                try:
                    with anyio.fail_after(self.options.transfer_timeout):
                        async with conn.start_sftp_client() as sftp:
                            started = True
                            await operation(sftp)
                    return
                except TimeoutError as exc:
                    raise TransportError(
                        f"ssh {self.label}: {action} timed out after "
                        f"{self.options.transfer_timeout:g}s"
                    ) from exc
                except asyncssh.ChannelOpenError as exc:
                    if attempt == 1 and not started and conn.is_closed():
                        continue  # the connection was dead already: once more on a new one
                    raise TransportError(
                        f"ssh {self.label}: {action} failed: {_describe(exc)}"
                    ) from exc
                except _SSH_ERRORS as exc:
                    raise TransportError(
                        f"ssh {self.label}: {action} failed: {_describe(exc)}"
                    ) from exc

    async def aclose(self) -> None:
        """Close the connections; idempotent. The transport cannot be used afterwards."""
        self._closed = True
        conn, bastion = self._conn, self._bastion
        self._conn = self._bastion = None
        for each in (conn, bastion):
            if each is not None:
                each.close()
                with anyio.move_on_after(_CLOSE_GRACE, shield=True):
                    await each.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- connection management ---------------------------------------------------------

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None and not conn.is_closed() and not self._closed:
            return conn
        async with self._connect_lock:
            if self._closed:
                raise TransportError(f"ssh {self.label}: transport is closed")
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = None
            now = time.monotonic()
            if now < self.available_at:
                raise TransportError(
                    f"ssh {self.label}: unreachable, next connection attempt in "
                    f"{self.available_at - now:.1f}s (last error: {self.last_error})"
                )
            if self._last_attempt is not None:
                pause = self._last_attempt + self.options.min_connect_interval - now
                if pause > 0:  # rate limit: a flapping connection is not retried in a loop
                    await anyio.sleep(pause)
            self._last_attempt = time.monotonic()
            self.connect_attempts += 1
            try:
                conn = await self._open()
            except TransportError as exc:
                self._failures += 1
                delay = self._backoff_delay()
                self.available_at = time.monotonic() + delay
                self.last_error = exc.message
                self._log.warning(
                    "ssh_connect_failed",
                    error=exc.message,
                    failures=self._failures,
                    retry_in=round(delay, 3),
                )
                raise
            self._failures = 0
            self.available_at = 0.0
            self.last_error = None
            self._timeout_conn = conn if await self._probe_timeout(conn) else None
            self._conn = conn
            return conn

    def _backoff_delay(self) -> float:
        """Exponential in the number of failures, capped, jittered into [base/2, base]."""
        base = retry_delay(
            self._failures, base=self.options.backoff_initial, cap=self.options.backoff_max
        )
        return self._random.uniform(base / 2, base)

    async def _open(self) -> asyncssh.SSHClientConnection:
        tunnel: asyncssh.SSHClientConnection | None = None
        if self._jump is not None:
            tunnel = self._bastion
            if tunnel is None or tunnel.is_closed():
                self._bastion = None
                tunnel = self._bastion = await self._connect(self._jump, tunnel=None)
        return await self._connect(self._head, tunnel=tunnel)

    async def _connect(
        self, endpoint: _Endpoint, *, tunnel: asyncssh.SSHClientConnection | None
    ) -> asyncssh.SSHClientConnection:
        where = f"ssh {endpoint.role} {endpoint.label}"
        known_hosts, known_hosts_path = await _load_known_hosts(endpoint.known_hosts, where)
        policy = _HostKeyPolicy(self, endpoint, known_hosts, known_hosts_path)
        options = self.options
        kwargs: dict[str, Any] = {
            "port": endpoint.port,
            "known_hosts": known_hosts,
            "config": None,  # do not read ~/.ssh/config: SSHOptions says everything
            "connect_timeout": options.connect_timeout,
            "keepalive_interval": options.keepalive_interval,
            "keepalive_count_max": options.keepalive_count_max,
            "client_factory": lambda: policy,
        }
        if tunnel is not None:
            kwargs["tunnel"] = tunnel
        if endpoint.user is not None:
            kwargs["username"] = endpoint.user
        if endpoint.identity_files:
            kwargs["client_keys"] = list(endpoint.identity_files)
        try:
            # connect_timeout bounds asyncssh's own steps; this bounds the whole call
            with anyio.fail_after(options.connect_timeout + _CLOSE_GRACE):
                conn: asyncssh.SSHClientConnection = await asyncssh.connect(endpoint.host, **kwargs)
        except asyncssh.HostKeyNotVerifiable as exc:
            reason = policy.problem or str(exc)
            raise TransportError(f"{where}: host key refused: {reason}") from exc
        except asyncssh.PermissionDenied as exc:
            keys = ", ".join(endpoint.identity_files) or "the default key files"
            raise TransportError(
                f"{where}: authentication failed with {keys} and the ssh-agent: {exc}"
            ) from exc
        except _SSH_ERRORS as exc:
            raise TransportError(f"{where}: cannot connect: {_describe(exc)}") from exc
        self._log.info(
            "ssh_connected",
            role=endpoint.role,
            endpoint=endpoint.label,
            via=None if tunnel is None or self._jump is None else self._jump.label,
        )
        return conn

    def _note_disconnect(self, endpoint: _Endpoint, exc: Exception | None) -> None:
        reason = "closed" if exc is None else _describe(exc)
        if exc is not None and not self._closed:
            self.last_error = f"{endpoint.role} {endpoint.label}: connection lost: {reason}"
        self._log.info(
            "ssh_disconnected", role=endpoint.role, endpoint=endpoint.label, reason=reason
        )

    async def _close_channel(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """Close a command's channel and wait (bounded, even when cancelled) until it is.

        A command still running (timed out, or its caller was cancelled) is first sent
        SIGKILL through a ``signal`` request; servers that ignore those (OpenSSH 9.2 does
        for sessions without a pty) keep the command running and only confirm the close
        when it exits. After ``_CHANNEL_CLOSE_GRACE`` the channel is left to close on
        its own: the connection is kept, as other callers' commands run on it.
        """
        if process.exit_status is None and process.exit_signal is None:
            with contextlib.suppress(*_SSH_ERRORS):
                process.send_signal("KILL")
        process.close()
        with anyio.move_on_after(_CHANNEL_CLOSE_GRACE, shield=True) as scope:
            await process.wait_closed()
        if scope.cancelled_caught:
            self._log.warning(
                "ssh_channel_close_stuck",
                command=_preview(str(process.command)),
                waited=_CHANNEL_CLOSE_GRACE,
            )


def wrap_in_timeout(command: str, seconds: float) -> str:
    """``command`` run by ``sh`` under the head's ``timeout(1)``: TERM after ``seconds``,
    KILL ``_KILL_GRACE`` seconds later (invariant 6: the command is one quoted word)."""
    duration = str(int(seconds)) if seconds == int(seconds) else f"{seconds:.3f}"
    # exec: timeout(1) takes the login shell's place, so it stays in the session's process
    # group (its setpgid fails for a session leader) and what it signals is everything
    # the command started; otherwise it would move itself and the command to a group of
    # their own, out of reach of whoever ends the session
    return "exec " + shlex.join(["timeout", "-k", str(_KILL_GRACE), duration, "sh", "-c", command])


def unwrap_timeout(sent: str) -> str:
    """The command inside :func:`wrap_in_timeout`'s result; anything else as it is."""
    words = sent.split(" ", 7)
    if len(words) == 8 and words[:2] == ["exec", "timeout"] and words[5:7] == ["sh", "-c"]:
        inner = shlex.split(words[7])
        if len(inner) == 1:
            return inner[0]
    return sent


def _private(mode: int) -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs(permissions=mode & 0o700)


def _create_private(path: str, mode: int) -> anyio.AsyncFile[bytes]:
    """A new local file, owner-only until the caller gives it ``mode``; whatever was at
    ``path`` (a file, a symlink) is replaced, never written through."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return anyio.wrap_file(os.fdopen(os.open(path, flags, mode & 0o700), "wb"))


def _expand_all(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(os.path.expanduser(path) for path in paths)


def _expand_known_hosts(path: str | None) -> str:
    return os.path.expanduser(path if path is not None else "~/.ssh/known_hosts")


async def _load_known_hosts(resolved: str, where: str) -> tuple[asyncssh.SSHKnownHosts, str]:
    """Read a known_hosts file (a missing file knows no host)."""
    try:
        text = await anyio.Path(resolved).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise TransportError(f"{where}: cannot read known_hosts {resolved}: {exc}") from exc
    try:
        return asyncssh.import_known_hosts(text), resolved
    except (ValueError, asyncssh.Error) as exc:
        raise TransportError(f"{where}: invalid known_hosts {resolved}: {exc}") from exc


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _preview(command: str) -> str:
    if len(command) <= _COMMAND_PREVIEW:
        return command
    return command[:_COMMAND_PREVIEW] + "..."
