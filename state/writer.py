"""The group-commit writer and the WAL checkpointer.

* One writer task drains a queue of write operations and group-commits them: each
  operation runs inside its own SAVEPOINT of a shared ``BEGIN IMMEDIATE`` transaction,
  so one failing operation rolls back alone while the others commit together.
* The WAL is checkpointed by a task of its own on a third connection, not by the commit
  that crosses SQLite's automatic threshold: after a 100,000-job submit that checkpoint
  copied 65 MB and waited for an fsync before the client got its ack.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite
import anyio
import anyio.abc
import structlog

from schedulerd.errors import SchedulerdError, ShuttingDown, StorageError

log = structlog.get_logger(__name__)
T = TypeVar("T")
BATCH_MAX = 1000
"""The most operations one transaction commits together."""


class _Op:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Writer:
    """The only writer of the database (``db``); checkpoints through ``checkpointer``."""

    def __init__(self, db: aiosqlite.Connection, checkpointer: aiosqlite.Connection) -> None:
        self.db = db
        self._checkpointer = checkpointer
        self.checkpoint_delay = 1.0
        self._commits = 0
        send, receive = anyio.create_memory_object_stream[_Op](max_buffer_size=math.inf)
        self._send = send
        self._receive = receive
        self._changed = anyio.Event()
        self._work = anyio.Event()
        #: set by an operation that made a job ready or freed a slot; the commit then
        #: wakes :meth:`wait_work`
        self.work_pending = False
        self.closed = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Group-commit queued operations until :meth:`close`."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._checkpoint_loop)
            task_status.started()
            await self._write_loop()
            tg.cancel_scope.cancel()

    async def _checkpoint_loop(self) -> None:
        done = 0
        while True:
            if self._commits == done:
                await self._changed.wait()
            await anyio.sleep(self.checkpoint_delay)  # one checkpoint per burst of commits
            done = self._commits
            try:
                # PASSIVE never blocks the writer or the readers; what it cannot copy now
                # (frames a reader still needs) the next round copies
                await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("store_checkpoint_failed", error=str(exc))

    async def _write_loop(self) -> None:
        async with self._receive:
            while True:
                try:
                    first = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                with anyio.CancelScope(shield=True):
                    await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            for op in batch:
                await db.execute("SAVEPOINT op")
                try:
                    op.result = await op.fn(db)
                except Exception as exc:
                    op.error = exc
                    if not db.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk, an I/O
                        # error): the batch's other operations are undone too, for that cause
                        raise
                    await db.execute("ROLLBACK TO op")
                await db.execute("RELEASE op")
            await db.execute("COMMIT")
        except Exception as exc:
            log.error("store_commit_failed", error=str(exc))
            try:
                await db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for op in batch:
                if op.error is None:
                    op.error = (
                        write_error(exc) if isinstance(exc, sqlite3.Error)
                        else SchedulerdError(f"database write failed: {exc}")
                    )  # fmt: skip
        for op in batch:
            op.done.set()
        self._commits += 1
        self._changed.set()
        self._changed = anyio.Event()
        if self.work_pending:
            self.work_pending = False
            self._work.set()
            self._work = anyio.Event()

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` inside the writer's transaction; return once it is committed."""
        if self.closed:
            raise ShuttingDown("the store is closed")
        op = _Op(fn)
        self._send.send_nowait(op)
        with anyio.CancelScope(shield=True):
            # the write goes ahead regardless; never leave before knowing its outcome
            await op.done.wait()
        if isinstance(op.error, sqlite3.Error):
            raise write_error(op.error) from op.error
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def wait_work(self) -> None:
        await self._work.wait()

    @property
    def changed(self) -> anyio.Event:
        return self._changed

    def close(self) -> None:
        """Stop accepting writes; :meth:`run` drains what is queued and returns."""
        if not self.closed:
            self.closed = True
            self._send.close()

    def close_streams(self) -> None:
        self.closed = True
        self._send.close()
        self._receive.close()


def write_error(exc: sqlite3.Error) -> SchedulerdError:
    """A failed write as the caller hears it (never a bare sqlite3 error, whatever path
    the write took): what happened, and that nothing of it was stored."""
    message = f"the database could not be written ({exc}); nothing of this request was stored"
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        message += ": free space on the file system of the state directory"
    return StorageError(message)
