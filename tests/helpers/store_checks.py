"""Checks of a daemon's database after it stopped: every row is what its events say."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def assert_rows_replay(database: Path) -> dict[int, tuple[str, int, int, int | None, str | None]]:
    """Every transition wrote one event in the same transaction: a job's version equals its
    number of events, and replaying its events rebuilds its
    state, attempt, exit code and native id. The rows by id:
    ``(state, version, attempt, exit_code, native_id)``."""
    db = sqlite3.connect(database)
    try:
        rows = {
            r[0]: r[1:]
            for r in db.execute(
                "SELECT id, state, version, attempt, exit_code, native_id FROM jobs"
            )
        }
        for jid, (state, version, attempt, exit_code, native) in rows.items():
            events = list(
                db.execute(
                    "SELECT to_state, version, data FROM events WHERE job_id=? ORDER BY id", (jid,)
                )
            )
            assert len(events) == version, jid
            replay: dict[str, object] = {"attempt": 1, "exit_code": None, "native_id": None}
            for to_state, _, data in events:
                replay["state"] = to_state
                for key, value in (json.loads(data) if data else {}).items():
                    if key in replay:
                        replay[key] = value
            assert (
                replay["state"],
                replay["attempt"],
                replay["exit_code"],
                replay["native_id"],
            ) == (
                state,
                attempt,
                exit_code,
                native,
            ), jid
    finally:
        db.close()
    return rows
