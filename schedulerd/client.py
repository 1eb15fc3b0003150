"""Talk to a running schedulerd from Python: the client ``schedctl``, the tests and the
benchmarks use, and the one for your own scripts.

Two clients, one framing and one error type (PROTOCOL.md, "Python client"):

* :class:`Client` blocks: scripts, notebooks, cron jobs, ``schedctl`` itself.
* :class:`AsyncClient` awaits (anyio, so asyncio or trio): programs that already run an
  event loop, or that want to pipeline many calls.

Both send one request at a time with ``call(method, params)`` and return its ``result``;
an ``error`` reply raises :class:`RpcError`, whose ``code`` is the stable number to
test (PROTOCOL.md section 6) and ``data`` its machine-readable details. Notifications
(``events.event`` after ``events.subscribe``) that arrive meanwhile are kept in order for
``next_notification``.

This module needs nothing of the daemon but :mod:`schedulerd.errors`.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any, Self

import anyio
import anyio.abc

from schedulerd.errors import SchedulerdError, error_class_for_code

#: the code a reply without one is taken to carry (JSON-RPC "internal error")
INTERNAL_ERROR = -32603


class RpcError(Exception):
    """The daemon answered a call with an error (or a client check found one: ``code`` is
    then the code the daemon would have used)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @property
    def error_class(self) -> type[SchedulerdError]:
        """The daemon's class for this code (``schedulerd.errors``), for ``issubclass``."""
        return error_class_for_code(self.code)

    @property
    def exit_status(self) -> int:
        """What ``schedctl`` exits with for this error."""
        return self.error_class.exit_status


def request_line(req_id: int, method: str, params: dict[str, Any] | None) -> bytes:
    """One request, framed: a JSON object on one line."""
    message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}}
    return json.dumps(message).encode() + b"\n"


def is_notification(message: dict[str, Any]) -> bool:
    return "id" not in message and "method" in message


def answers(message: dict[str, Any], req_id: int) -> bool:
    """Whether ``message`` is the reply to request ``req_id``: its own id, or ``null``
    (an error the daemon raised before it could read the id). Anything else is a stale
    reply (to a call given up on) and is skipped."""
    return "id" in message and message["id"] in (req_id, None)


def result_of(reply: dict[str, Any]) -> Any:
    """The reply's ``result``, or its ``error`` raised as a RpcError."""
    if "error" in reply:
        err = reply["error"]
        if not isinstance(err, dict):
            raise RpcError(INTERNAL_ERROR, f"malformed error in reply: {err!r}")
        code = err.get("code", INTERNAL_ERROR)
        raise RpcError(int(code), str(err.get("message")), err.get("data"))
    return reply.get("result")


class LineReader:
    """Splits what arrives on the socket into messages (one JSON object per line)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.scanned = 0  # bytes of buffer known to hold no newline

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, or None until more bytes arrive."""
        while True:
            newline = self.buffer.find(b"\n", self.scanned)
            if newline < 0:
                self.scanned = len(self.buffer)
                return None
            line = bytes(self.buffer[:newline])
            del self.buffer[: newline + 1]
            self.scanned = 0
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ConnectionError(f"unexpected reply {line[:200]!r}")
            return obj


class Client:
    """A blocking client: one request at a time; notifications that arrive meanwhile are
    kept for :meth:`next_notification`. ``ConnectionError`` when the daemon cannot be
    reached or goes away, ``TimeoutError`` when a call is not answered within
    ``timeout`` seconds (None: wait as long as it takes)."""

    def __init__(self, path: str | Path, timeout: float | None = 60.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except OSError as exc:
            self.sock.close()
            why = exc.strerror or exc
            raise ConnectionError(f"cannot connect to schedulerd at {self.path}: {why}") from exc
        self.reader = LineReader()
        self.next_id = 1
        self.pending: deque[dict[str, Any]] = deque()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message, or None when none is complete within ``timeout`` seconds
        (None: wait as long as it takes; 0: only what has already arrived)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self.reader.next_message()
            if message is not None:
                return message
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self.sock], [], [], left)
            if not readable:
                return None
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.reader.feed(chunk)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result (RpcError for an error reply)."""
        req_id = self.next_id
        self.next_id += 1
        self.sock.sendall(request_line(req_id, method, params))
        while True:
            reply = self._read(self.timeout)
            if reply is None:
                raise TimeoutError(f"no answer to {method} within {self.timeout:.0f} s")
            if is_notification(reply):
                self.pending.append(reply)
            elif answers(reply, req_id):
                return result_of(reply)

    def next_notification(self, timeout: float | None) -> dict[str, Any] | None:
        """The next notification, or None if none came within ``timeout`` (None: forever;
        0: only one that has already arrived)."""
        while not self.pending:
            message = self._read(timeout)
            if message is None:
                return None
            if is_notification(message):
                return message
        return self.pending.popleft()


class AsyncClient:
    """The same over an anyio byte stream. Reads that take longer than their ``timeout``
    raise ``TimeoutError``; a daemon that hangs up raises ``anyio.EndOfStream``.
    :meth:`send_raw` and :meth:`read_message` give the bare lines, for tests of the
    protocol itself."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.reader = LineReader()
        self.next_id = 1
        self.notes: deque[dict[str, Any]] = deque()

    @classmethod
    async def connect(cls, path: Path | str) -> AsyncClient:
        return cls(await anyio.connect_unix(str(path)))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    # Each read takes its own timeout (ASYNC109): a script or test waits per call, and a
    # client that hangs forever on a silent daemon is the thing to avoid.
    async def read_message(self, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message of any kind (reply or notification)."""
        with anyio.fail_after(timeout):
            while (message := self.reader.next_message()) is None:
                self.reader.feed(await self.stream.receive(1 << 20))
        return message

    async def read_reply(self, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next reply; notifications read on the way are kept for next_notification."""
        while True:
            message = await self.read_message(timeout)
            if not is_notification(message):
                return message
            self.notes.append(message)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109 (see read_message)
    ) -> Any:
        """Send one request and return its result (RpcError for an error reply)."""
        req_id = self.next_id
        self.next_id += 1
        await self.stream.send(request_line(req_id, method, params))
        while True:
            reply = await self.read_reply(timeout)
            if answers(reply, req_id):
                return result_of(reply)

    async def next_notification(self, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next notification (TimeoutError if none comes within ``timeout``)."""
        while not self.notes:
            message = await self.read_message(timeout)
            if is_notification(message):
                return message
        return self.notes.popleft()
