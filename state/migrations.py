"""SQLite schema and its migrations, versioned with ``PRAGMA user_version``.

Migration N takes a database at version N-1 to version N. Never edit a migration that
has shipped; add the next one.
"""

from __future__ import annotations

import aiosqlite
import structlog

from schedulerd.errors import SchedulerdError
from schedulerd.state.queries import fetchone

log = structlog.get_logger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, deps, events, campaigns, settings
    """
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL,
        campaign     TEXT,
        step         TEXT,
        idx          INTEGER,
        state        TEXT NOT NULL,
        attempt      INTEGER NOT NULL DEFAULT 1,
        max_attempts INTEGER NOT NULL DEFAULT 1,
        epoch        INTEGER NOT NULL DEFAULT 0,
        version      INTEGER NOT NULL DEFAULT 1,
        cluster      TEXT NOT NULL,
        queue        TEXT,
        workdir      TEXT NOT NULL,
        native_id    TEXT,
        spec         TEXT NOT NULL,
        fingerprint  TEXT,
        result       TEXT,
        exit_code    INTEGER,
        reason       TEXT,
        not_before   REAL,
        kill_pending INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL,
        queued_at    REAL,
        started_at   REAL,
        finished_at  REAL
    );
    CREATE INDEX jobs_by_state ON jobs(state, id);
    CREATE INDEX jobs_by_cluster_state ON jobs(cluster, state, id);
    CREATE INDEX jobs_by_campaign ON jobs(campaign, id) WHERE campaign IS NOT NULL;
    CREATE INDEX jobs_by_name ON jobs(name, id);
    CREATE INDEX jobs_kill_pending ON jobs(cluster, id) WHERE kill_pending = 1;
    CREATE INDEX jobs_ready_not_before ON jobs(cluster, not_before)
        WHERE state = 'ready' AND not_before IS NOT NULL;

    CREATE TABLE deps (
        parent INTEGER NOT NULL,
        child  INTEGER NOT NULL,
        PRIMARY KEY (parent, child)
    ) WITHOUT ROWID;
    CREATE INDEX deps_by_child ON deps(child, parent);

    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id     INTEGER NOT NULL,
        at         REAL NOT NULL,
        from_state TEXT,
        to_state   TEXT NOT NULL,
        reason     TEXT,
        attempt    INTEGER NOT NULL,
        native_id  TEXT,
        version    INTEGER NOT NULL,
        data       TEXT
    );
    CREATE INDEX events_by_job ON events(job_id, id);

    CREATE TABLE campaigns (
        name           TEXT PRIMARY KEY,
        spec           TEXT NOT NULL,
        deadline       REAL,
        failure_policy TEXT,
        priority       INTEGER NOT NULL DEFAULT 0,
        state          TEXT NOT NULL,
        created_at     REAL NOT NULL
    );

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: job.submit calls remembered by their client token (idempotency key): the same
    # token again gets the same ids and creates nothing. digest: SHA-256 of the call's
    # params without the token (the same token with other params is refused); ids: the
    # reply's ids in the caller's order, a JSON array of [first, count] runs.
    """
    CREATE TABLE submissions (
        token      TEXT PRIMARY KEY,
        digest     TEXT NOT NULL,
        ids        TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 3: hold/release of a job on a head, recorded for the poller to carry out there (like
    # kill_pending for cancel): one pending action per job, dropped once the head answered
    # or the job is no longer where the action applies.
    """
    CREATE TABLE head_intents (
        job_id  INTEGER PRIMARY KEY,
        cluster TEXT NOT NULL,
        action  TEXT NOT NULL CHECK (action IN ('hold', 'release'))
    );
    CREATE INDEX head_intents_by_cluster ON head_intents(cluster, job_id);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(db: aiosqlite.Connection) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one transaction per migration."""
    row = await fetchone(db, "PRAGMA user_version")
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise SchedulerdError(
            f"database schema version {version} is newer than this schedulerd's"
            f" ({SCHEMA_VERSION}): run a newer schedulerd on it, or choose another --state-dir"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[target - 1]):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {target}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        log.info("store_migrated", version=target)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
