"""The control server: JSON-RPC 2.0 over a Unix socket, one JSON object per line.

Each connection is a task. Peers are checked with SO_PEERCRED (the daemon's user, root,
or a member of the configured group). A line longer than the frame limit is discarded
up to its newline and answered with an error; the connection stays usable. Replies and
``events.subscribe`` notifications share the connection under one send lock.

This module is the transport only: lines are decoded by ``rpc.py`` and each request is
dispatched to its handler in ``methods/`` (``methods.HANDLERS``).
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import structlog
from anyio.abc import SocketAttribute

from schedulerd import rpc
from schedulerd.errors import (
    ConfigError,
    MessageTooLarge,
    MethodNotFound,
    PermissionDenied,
    SchedulerdError,
)
from schedulerd.methods import HANDLERS
from schedulerd.methods.base import ControlContext

log = structlog.get_logger(__name__)

READ_CHUNK = 256 * 1024


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(pid: int, uid: int, gid: int, group: str | None) -> bool:
    if uid in (0, os.getuid()):
        return True
    if group is None:
        return False
    try:
        wanted = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if gid == wanted:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return str(wanted) in line.split()[1:]
    except OSError:
        return False
    return False


#: how long one write may wait for a peer that does not read (a stuck subscriber)
WRITE_TIMEOUT = 30.0


class PeerGone(Exception):
    """The peer hung up, reset the connection or stopped reading: the connection ends."""


class BufferBudget:
    """Bytes of unfinished request lines held across all connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        self.used -= n


class Connection:
    """One client. Its failures (peer gone, reset, write timeout, a bug in a handler's
    reply) end this connection only: nothing a client does or fails to do may end the
    daemon (``daemon.shutdown`` and signals do)."""

    def __init__(
        self,
        ctx: ControlContext,
        stream: anyio.abc.ByteStream,
        max_bytes: int,
        budget: BufferBudget | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.max_bytes = max_bytes
        self.budget = budget or BufferBudget(max(max_bytes, 1))
        self.write_timeout = WRITE_TIMEOUT if write_timeout is None else write_timeout
        self.send_lock = anyio.Lock()
        self.subscription: anyio.CancelScope | None = None
        self.after_reply: Callable[[], None] | None = None

    async def send(self, line: bytes) -> None:
        """Write one line; PeerGone when the peer cannot take it."""
        async with self.send_lock:
            try:
                with anyio.fail_after(self.write_timeout):
                    await self.stream.send(line)
            except TimeoutError as exc:
                raise PeerGone(f"peer read nothing for {self.write_timeout:g}s") from exc
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise PeerGone(str(exc) or type(exc).__name__) from exc

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                try:
                    await self._read_loop()
                except PeerGone as exc:
                    log.debug("peer_gone", error=str(exc))
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._release()

    def close_soon(self, why: str) -> None:
        """End this connection from one of its tasks (a subscription whose peer is gone)."""
        log.debug("peer_gone", error=why)
        self.tg.cancel_scope.cancel()

    def start_background(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` beside this connection's requests (``events.subscribe``'s stream),
        after the current reply is written; a peer gone or a failure ends the connection."""

        async def run() -> None:
            await anyio.lowlevel.checkpoint()  # the reply goes out before the task starts
            try:
                await task()
            except PeerGone as exc:
                self.close_soon(str(exc))
            except Exception:
                log.exception(f"{what}_failed")
                self.close_soon(f"{what} failed")

        self.tg.start_soon(run)

    _held = 0

    def _hold(self, n: int) -> bool:
        if not self.budget.take(n):
            return False
        self._held += n
        return True

    def _release(self) -> None:
        self.budget.give_back(self._held)
        self._held = 0

    async def _read_loop(self) -> None:
        buffer = bytearray()
        discarding: str | None = None  # why the rest of the current line is thrown away
        while True:
            try:
                chunk = await self.stream.receive(READ_CHUNK)
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ):
                return
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                piece = chunk[start:] if newline < 0 else chunk[start:newline]
                if discarding is None and piece:
                    if len(buffer) + len(piece) > self.max_bytes:
                        discarding = f"message longer than {self.max_bytes} bytes; it was discarded"
                    elif not self._hold(len(piece)):
                        discarding = (f"the daemon holds {self.budget.limit} bytes of unfinished "
                                      "messages from all clients; this message was discarded, "
                                      "send it again later")  # fmt: skip
                    else:
                        buffer += piece
                    if discarding is not None:
                        buffer = bytearray()
                        self._release()
                if newline < 0:
                    break
                if discarding is not None:
                    reason, discarding = discarding, None
                    await self.send(rpc.error_line(None, MessageTooLarge(reason)))
                elif buffer.strip():
                    line = bytes(buffer)
                    buffer = bytearray()
                    self._release()
                    await self._handle_line(line)
                else:
                    buffer = bytearray()
                    self._release()
                start = newline + 1

    async def _handle_line(self, line: bytes) -> None:
        req_id: Any = None
        request: rpc.Request | None = None
        try:
            request = rpc.decode_request(line)
            req_id = request.id
            result = await self._dispatch(request)
        except SchedulerdError as exc:
            if isinstance(exc.data, dict) and "id" in exc.data and req_id is None:
                req_id = exc.data.pop("id")
                if not exc.data:
                    exc.data = None
            log.info("request_failed", code=exc.code, error=exc.message)
            if request is None or not request.is_notification:  # never answer a notification
                await self.send(rpc.error_line(req_id, exc))
            return
        except Exception as exc:
            log.exception("request_crashed")
            if request is None or not request.is_notification:
                await self.send(rpc.error_line(req_id, SchedulerdError(f"internal error: {exc}")))
            return
        if not request.is_notification:
            try:
                line = rpc.result_line(req_id, result)
            except Exception as exc:  # a reply we cannot encode is our bug, not the peer's
                log.exception("reply_unencodable", method=request.method)
                line = rpc.error_line(req_id, SchedulerdError(f"internal error: {exc}"))
            await self.send(line)
        if self.after_reply is not None:
            callback, self.after_reply = self.after_reply, None
            callback()

    async def _dispatch(self, request: rpc.Request) -> Any:
        handler = HANDLERS.get(request.method)
        if handler is None:
            raise MethodNotFound(
                f"unknown method {request.method!r}", data={"methods": sorted(HANDLERS)}
            )
        return await handler(self, request.params)


async def serve_control(
    ctx: ControlContext,
    path: Path,
    *,
    group: str | None,
    max_bytes: int,
    max_buffered: int | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the socket (0600, or 0660 with a group), then serve until cancelled."""
    budget = BufferBudget(max_buffered if max_buffered is not None else max(max_bytes, 256 << 20))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # the socket's own metadata (unlink, chmod) on a local filesystem: instant, and done
    # before serving or after it, so blocking the loop for it costs nobody anything
    if await stale_socket_at(path):
        path.unlink()  # noqa: ASYNC240
    old_umask = os.umask(0o177 if group is None else 0o117)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    if group is not None:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as exc:
            await listener.aclose()
            raise SchedulerdError(f"cannot give the socket to group {group!r}: {exc}") from exc
        path.chmod(0o660)  # noqa: ASYNC240
    else:
        path.chmod(0o600)  # noqa: ASYNC240

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            pid, uid, gid = peer_credentials(raw)
            if not peer_allowed(pid, uid, gid, group):
                log.warning("peer_refused", uid=uid, pid=pid)
                try:
                    await stream.send(rpc.error_line(None, PermissionDenied(
                        f"uid {uid} may not use this daemon")))  # fmt: skip
                    # drain what the peer already sent, so closing does not reset the
                    # connection before it has read why
                    await stream.send_eof()
                    with anyio.move_on_after(1):
                        while await stream.receive(65536):
                            pass
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                    pass
                return
            await Connection(ctx, stream, max_bytes, budget).serve()

    async def handle_safely(stream: anyio.abc.SocketStream) -> None:
        # the listener's task group is the daemon's: whatever goes wrong with one client
        # (a bug included) is logged and ends that client's connection only
        try:
            await handle(stream)
        except Exception:
            log.exception("connection_failed")

    try:
        async with listener:
            task_status.started()
            await listener.serve(handle_safely)
    finally:
        path.unlink(missing_ok=True)  # noqa: ASYNC240


def check_socket_path(path: Path) -> bool:
    """True if a socket is at ``path``, False if nothing is; anything else (a regular
    file, a directory, a symlink, ...) is refused and left untouched: only a stale socket
    may be removed to bind a new one."""
    size = len(os.fsencode(path))
    if size > 107:  # sockaddr_un.sun_path holds 108 bytes with the final NUL
        raise ConfigError(
            f"socket path {path} is too long for a Unix socket ({size} bytes, at most 107):"
            " choose a shorter one (--socket)"
        )
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"socket path {path}: {exc.strerror or exc}") from exc
    if stat.S_ISSOCK(mode):
        return True
    kinds = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory",
             stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO"}  # fmt: skip
    kind = kinds.get(stat.S_IFMT(mode), "a device or other special file")
    raise ConfigError(
        f"socket path {path} is {kind}, not a socket; refusing to replace it:"
        " remove it yourself or choose another socket path (--socket)"
    )


async def stale_socket_at(path: Path) -> bool:
    """True if a dead daemon's socket is at ``path`` (remove it to bind a new one), False
    if nothing is there; a live socket, or anything that is not a socket, is refused."""
    if not check_socket_path(path):
        return False
    if await _socket_alive(path):
        raise SchedulerdError(
            f"another daemon is listening on {path}: stop it (schedctl shutdown) or choose"
            " another socket path (--socket)"
        )
    return True


async def _socket_alive(path: Path) -> bool:
    try:
        with anyio.fail_after(2):
            stream = await anyio.connect_unix(path)
    except (OSError, TimeoutError):
        return False
    await stream.aclose()
    return True
