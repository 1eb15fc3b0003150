"""What every method handler sees: the daemon's parts and its own connection.

A handler is ``async def handler(session, params) -> result``. ``session`` is the
connection the request came on, seen through :class:`Session` (the socket server in
``control.py`` implements it), so the handlers never import the server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from schedulerd.rpc import Params
from schedulerd.state.store import Store
from schedulerd.worker.cluster import ClusterWorker

MAX_BATCH_LIST = 100_000  # ids per job.states/cancel/hold/... and events call
MAX_LIST_LIMIT = 10_000  # jobs per job.list page, events per events.list page


@dataclass
class ControlContext:
    """What the handlers need from the daemon (wired in daemon.py)."""

    store: Store
    workers: dict[str, ClusterWorker]
    settings_getter: Callable[[], Any]
    request_shutdown: Callable[[], None]
    started_at: float = field(default_factory=time.time)
    stopping: bool = False


class Session(Protocol):
    """One client connection, as a handler uses it."""

    ctx: ControlContext
    #: the connection's ``events.subscribe`` stream, cancelled to end it
    subscription: anyio.CancelScope | None
    #: called once the current request's reply is written (``daemon.shutdown``)
    after_reply: Callable[[], None] | None

    async def send(self, line: bytes) -> None:
        """Write one line to the peer."""

    def start_background(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` beside the connection's requests, started after the current
        reply is written; it ends with the connection. If the peer is gone or the task
        fails, the connection ends (``what`` names it in the log)."""


Handler = Callable[[Session, Params], Awaitable[Any]]
