"""Opening the database file: its structure checked, its pragmas set, its schema
migrated, and every reason it cannot be used said in one line.

Three connections: the writer (``synchronous=FULL``, so an acknowledged write survives a
power cut: invariant 1), a read-only reader (WAL readers never block the writer) and
the checkpointer.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import structlog

from schedulerd.errors import SchedulerdError
from schedulerd.state.migrations import migrate

log = structlog.get_logger(__name__)

STARTUP_CHECK_SECONDS = 2.0
"""How long :func:`open_connections` checks the database's structure (``PRAGMA
quick_check``) before giving up on finishing: a 1,000,000-job database (700 MB) takes
0.6 s from the page cache but 10 s from a cold disk, and a restart must reach READY
within 5 s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Connections:
    writer: aiosqlite.Connection
    reader: aiosqlite.Connection
    checkpointer: aiosqlite.Connection


async def open_connections(
    path: Path, *, check_seconds: float = STARTUP_CHECK_SECONDS
) -> Connections:
    """Open (creating and migrating as needed) the database at ``path``.

    A damaged database is refused before anything is written to it (see
    :func:`_check_database`); every failure to open is a SchedulerdError whose message is
    one line: the path, what is wrong, what to do."""
    try:
        if _has_content(path):
            await _check_database(path, check_seconds)
        return await _open_connections(path)
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc


def _has_content(path: Path) -> bool:
    """Whether a database is already there (creating its directory if need be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise SchedulerdError(
                f"database {path} is a directory, not an SQLite file: move it away"
                " (or choose another --state-dir)"
            )
        return path.exists() and path.stat().st_size > 0
    except OSError as exc:
        raise SchedulerdError(
            f"cannot reach the database {path}: {exc.strerror or exc}; its directory must"
            " be one this user can read and write (or choose another --state-dir)"
        ) from exc


async def _check_database(path: Path, seconds: float) -> None:
    """``PRAGMA quick_check`` (every page's structure, without comparing indexes to their
    tables), interrupted after ``seconds``: an unfinished check is logged and the daemon
    starts, a failed one refuses the database. Without it a damaged file was accepted and
    the daemon failed later, with jobs already acknowledged into it."""
    started = time.monotonic()
    failure: sqlite3.Error | None = None
    rows: Iterable[Any] = ()
    checker = await aiosqlite.connect(path, isolation_level=None)
    try:
        # SQLite calls the progress handler every 1000 steps of the check, also inside its
        # one long virtual-machine instruction (1,000,000 jobs: 56,000 calls, 1 ms in all);
        # sqlite3_interrupt stops one whose SQLite does not
        deadline = started + seconds
        await checker.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        async with anyio.create_task_group() as tg:

            async def interrupt_later() -> None:
                await anyio.sleep(seconds)
                while True:  # until it lands: one sent before the statement began is lost
                    await checker.interrupt()  # sqlite3_interrupt: safe from any thread
                    await anyio.sleep(0.01)

            tg.start_soon(interrupt_later)
            try:
                rows = await checker.execute_fetchall("PRAGMA quick_check")
            except sqlite3.Error as exc:  # kept out of the task group's exception group
                failure = exc
            tg.cancel_scope.cancel()
    finally:
        await checker.close()
    if getattr(failure, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
        log.warning(
            "store_check_unfinished", database=str(path), seconds=seconds,
            detail=f"started unchecked; `sqlite3 {path} 'PRAGMA quick_check'` checks it all",
        )  # fmt: skip
        return
    if failure is not None:
        raise failure
    problems = [str(r[0]) for r in rows]
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("***", "").split())
        more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
        raise sqlite3.DatabaseError(f"{first[:200]}{more}")
    log.debug("store_checked", seconds=round(time.monotonic() - started, 3))


def _open_error(path: Path, exc: sqlite3.Error) -> SchedulerdError:
    """One line for a database that cannot be opened: what is wrong and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    damaged = primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    if damaged or type(exc) is sqlite3.DatabaseError:
        return SchedulerdError(
            f"database {path} is damaged ({exc}); schedulerd will not use it: keep a copy, then"
            f" restore it from a backup or salvage it (sqlite3 {path} .recover), or move it"
            " away to start with an empty database"
        )
    if primary == sqlite3.SQLITE_FULL:
        return SchedulerdError(f"database {path}: {exc}: free some space on its file system")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return SchedulerdError(f"database {path} is locked by another program ({exc}): stop it")
    return SchedulerdError(
        f"cannot open database {path} ({exc}): it must be a file this user can read and"
        " write, in a directory this user can write (or choose another --state-dir)"
    )


async def _open_connections(path: Path) -> Connections:
    writer = await aiosqlite.connect(path, isolation_level=None)
    opened = [writer]
    try:
        await writer.execute("PRAGMA journal_mode=WAL")
        await writer.execute("PRAGMA synchronous=FULL")
        await writer.execute("PRAGMA foreign_keys=OFF")
        await writer.execute("PRAGMA busy_timeout=5000")
        await writer.execute("PRAGMA wal_autocheckpoint=0")  # the Writer checkpoints
        try:  # jobs are created through json_each (see inserts.creation_rows)
            await writer.execute_fetchall(
                "SELECT json_object('a', json_extract(value, '$[0]')) FROM json_each('[[1]]')"
            )
        except sqlite3.OperationalError as exc:
            raise SchedulerdError(
                f"this Python's SQLite {sqlite3.sqlite_version} lacks the JSON functions"
                " (json_each); schedulerd needs SQLite 3.38 or later, or one built with JSON1"
            ) from exc
        await migrate(writer)
        if pages := os.environ.get("SCHEDULERD_TEST_MAX_PAGES"):
            # for tests only: a database that is full at this many pages (SQLITE_FULL),
            # as a full disk would make it
            await writer.execute(f"PRAGMA max_page_count = {int(pages)}")
        reader = await aiosqlite.connect(path, isolation_level=None)
        opened.append(reader)
        await reader.execute("PRAGMA query_only=ON")
        await reader.execute("PRAGMA busy_timeout=5000")
        checkpointer = await aiosqlite.connect(path, isolation_level=None)
        opened.append(checkpointer)
        await checkpointer.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        for connection in reversed(opened):
            await connection.close()
        raise
    return Connections(writer=writer, reader=reader, checkpointer=checkpointer)
