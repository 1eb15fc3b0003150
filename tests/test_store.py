"""The store's creation path (jobs built inside SQLite from JSON) and its WAL checkpointer."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedulerd.client import RpcError
from schedulerd.errors import StorageError
from schedulerd.state.models import Job, JobFilter, JobSpec, NewJob
from schedulerd.state.transitions import State
from tests.harness import local_settings, running_daemon, running_store


def _size(path: Path | str) -> int:
    return os.path.getsize(path)


def _rows(db_path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path)
    try:
        return list(db.execute(sql, args))
    finally:
        db.close()


# text that JSON has to escape, and text that it does not
nasty_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), min_size=1, max_size=20
) | st.sampled_from(
    ['a"b', "back\\slash", "{id}", "tab\there", "\u2028", "é😀", "\x01\x1f", "null"]
)
optional = st.none() | nasty_text
optional_int = st.none() | st.integers(-(2**63), 2**63 - 1)
texts = st.lists(nasty_text, max_size=3).map(tuple)
job_specs = st.builds(
    JobSpec,
    argv=st.lists(nasty_text, min_size=1, max_size=3).map(tuple),
    env=st.dictionaries(nasty_text, nasty_text, max_size=3),
    cpus=optional_int,
    memory_mb=optional_int,
    walltime_s=optional_int,
    account=optional,
    directives=texts,
    requeue=st.booleans(),
    inputs=texts,
    outputs=texts,
    outputs_root=optional,
)
new_jobs = st.builds(
    NewJob,
    name=nasty_text,
    cluster=st.sampled_from(["local", "hpc"]) | nasty_text,
    workdir=st.sampled_from(["/w/{id}", "/same"]) | nasty_text,
    spec=job_specs,
    queue=optional,
    max_attempts=st.integers(1, 101),
    campaign=optional,
    step=optional,
    idx=st.none() | st.integers(0, 10**6),
    fingerprint=optional,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(jobs=st.lists(new_jobs, min_size=1, max_size=12), same=st.booleans())
def test_created_rows_and_events_hold_exactly_what_was_given(
    tmp_path: Path, jobs: list[NewJob], same: bool
) -> None:
    """Whichever columns are constant across a chunk (bound once) or vary (taken out of
    the JSON by SQLite), every stored value is the one given, and the creation event
    carries the whole row."""
    if same:  # every column constant but the spec: the other path of _creation_rows
        jobs = [NewJob(**{**_fields(jobs[0]), "spec": job.spec}) for job in jobs]
    db_path = tmp_path / f"db-{time.monotonic_ns()}.sqlite3"

    async def run() -> tuple[list[int], dict[int, Job]]:
        async with running_store(db_path) as store:
            ids = await store.create_jobs(jobs)
            return ids, await store.get_jobs(ids)

    ids, read_back = anyio.run(run)
    assert ids == list(range(1, len(jobs) + 1))
    stored = _rows(db_path, "SELECT id, name, cluster, workdir, spec, queue, max_attempts, campaign,"
                            " step, idx, fingerprint, state, created_at FROM jobs ORDER BY id")  # fmt: skip
    events = _rows(db_path, "SELECT job_id, to_state, reason, at, data FROM events ORDER BY id")
    assert [e[0] for e in events] == ids
    for job, row, event in zip(jobs, stored, events, strict=True):
        jid = row[0]
        expected = {
            "name": job.name, "cluster": job.cluster, "workdir": job.workdir.replace("{id}", str(jid)),
            "queue": job.queue, "max_attempts": job.max_attempts, "campaign": job.campaign,
            "step": job.step, "idx": job.idx, "fingerprint": job.fingerprint,
        }  # fmt: skip
        got = dict(zip(("name", "cluster", "workdir"), row[1:4], strict=True))
        got.update(
            zip(
                ("queue", "max_attempts", "campaign", "step", "idx", "fingerprint"),
                row[5:11],
                strict=True,
            )
        )
        assert got == expected
        # the column holds the spec's JSON with its defaults left out, and reads back typed
        assert json.loads(row[4]) == json.loads(msgspec.json.encode(job.spec))
        assert read_back[jid].spec == job.spec
        assert row[11] == "ready" and isinstance(row[12], float)
        assert event[1:4] == ("ready", "created", row[12])
        data = json.loads(event[4])
        assert data.pop("spec") == json.loads(msgspec.json.encode(job.spec))
        assert data == expected


def _fields(job: NewJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__struct_fields__}


#: specs as the store wrote them when a spec was a plain dict (jobspec._row put a key in
#: only when it was set, in this order), each with the JobSpec it must read back as
DICT_ERA_SPECS = [
    ({"argv": ["true"]}, JobSpec(argv=("true",))),
    (
        {"argv": ["sh", "-c", "echo \"é\" > out.h5"], "env": {"K": "V", "OMP_NUM_THREADS": "1"},
         "cpus": 4, "memory_mb": 2048, "walltime_s": 5400, "account": "proj-1",
         "directives": ["-l select=1:ngpus=1"], "requeue": True, "inputs": ["/data/in.csv"],
         "outputs": ["*.h5", "logs/*"], "outputs_root": "/srv/outputs"},
        JobSpec(argv=("sh", "-c", 'echo "é" > out.h5'), env={"K": "V", "OMP_NUM_THREADS": "1"},
                cpus=4, memory_mb=2048, walltime_s=5400, account="proj-1",
                directives=("-l select=1:ngpus=1",), requeue=True, inputs=("/data/in.csv",),
                outputs=("*.h5", "logs/*"), outputs_root="/srv/outputs"),
    ),
    ({"argv": ["a"], "outputs": ["x"]}, JobSpec(argv=("a",), outputs=("x",))),
]  # fmt: skip


async def test_a_spec_stored_as_a_dict_reads_back_as_the_same_job_spec(tmp_path: Path) -> None:
    """A database written when the spec was an untyped dict needs no migration: each
    stored spec decodes into the JobSpec it meant, and the same spec created now is stored
    as the very same JSON text."""
    db_path = tmp_path / "db.sqlite3"
    n = len(DICT_ERA_SPECS)
    async with running_store(db_path) as store:
        old_ids = await store.create_jobs(
            [NewJob(name=f"old{i}", cluster="c", workdir="/w", spec=JobSpec(argv=("placeholder",)))
             for i in range(n)]
        )  # fmt: skip
    db = sqlite3.connect(db_path)
    try:
        with db:
            for jid, (old, _) in zip(old_ids, DICT_ERA_SPECS, strict=True):
                # as the old code stored it: msgspec's JSON of the dict, through SQLite
                text = msgspec.json.encode(old).decode()
                db.execute("UPDATE jobs SET spec = json(?) WHERE id = ?", (text, jid))
    finally:
        db.close()
    async with running_store(db_path) as store:
        jobs = await store.get_jobs(old_ids)
        assert [jobs[jid].spec for jid in old_ids] == [spec for _, spec in DICT_ERA_SPECS]
        new_ids = await store.create_jobs(
            [NewJob(name=f"new{i}", cluster="c", workdir="/w", spec=spec)
             for i, (_, spec) in enumerate(DICT_ERA_SPECS)]
        )  # fmt: skip
    texts = dict(_rows(db_path, "SELECT id, spec FROM jobs"))
    assert [texts[jid] for jid in new_ids] == [texts[jid] for jid in old_ids]


async def test_chunks_with_dependencies_get_their_initial_states(tmp_path: Path) -> None:
    """Jobs arriving in several chunks, with edges to existing jobs and to jobs of earlier
    chunks: children of unfinished parents are pending, of a failed parent skipped."""
    async with running_store(tmp_path / "db.sqlite3") as store:
        (failed,) = await store.create_jobs(
            [NewJob(name="p", cluster="c", workdir="/w", spec=JobSpec(argv=("x",)))]
        )
        db = sqlite3.connect(tmp_path / "db.sqlite3")
        db.execute("UPDATE jobs SET state = 'failed' WHERE id = ?", (failed,))
        db.commit()
        db.close()
        send, receive = anyio.create_memory_object_stream[Any](4)
        chunk1 = [
            NewJob(name="a", cluster="c", workdir="/w/{id}", spec=JobSpec(argv=("a",))),
            NewJob(
                name="b", cluster="c", workdir="/w/{id}", spec=JobSpec(argv=("b",)), after=(failed,)
            ),
        ]
        chunk2 = [
            NewJob(
                name="c",
                cluster="c",
                workdir="/w/{id}",
                spec=JobSpec(argv=("c",)),
                after_local=(0,),
            ),
            NewJob(
                name="d",
                cluster="c",
                workdir="/w/{id}",
                spec=JobSpec(argv=("d",)),
                after_local=(1,),
            ),
            NewJob(name="e", cluster="c", workdir="/w/{id}", spec=JobSpec(argv=("e",))),
        ]
        await send.send(chunk1)
        await send.send(chunk2)
        send.close()
        ids = await store.create_jobs_from(5, [failed], receive)
        jobs = await store.get_jobs(ids)
    a, b, c, d, e = (jobs[i] for i in ids)
    assert (a.state, b.state, c.state, d.state, e.state) == (
        State.READY, State.SKIPPED, State.PENDING, State.SKIPPED, State.READY)  # fmt: skip
    assert c.workdir == f"/w/{c.id}"
    edges = set(_rows(tmp_path / "db.sqlite3", "SELECT parent, child FROM deps"))
    assert edges == {(failed, b.id), (a.id, c.id), (b.id, d.id)}
    reasons = dict(
        _rows(
            tmp_path / "db.sqlite3", "SELECT job_id, reason FROM events WHERE job_id > ?", (failed,)
        )
    )
    assert reasons[b.id] == reasons[d.id] == "a parent did not complete"
    assert reasons[a.id] == "created"


async def test_a_bad_chunk_stores_nothing(tmp_path: Path) -> None:
    async with running_store(tmp_path / "db.sqlite3") as store:
        send, receive = anyio.create_memory_object_stream[Any](4)
        await send.send([NewJob(name="a", cluster="c", workdir="/w", spec=JobSpec(argv=("a",)))])
        await send.send(ValueError("jobs[1]: invalid"))
        send.close()
        with pytest.raises(ValueError, match=r"jobs\[1\]: invalid"):
            await store.create_jobs_from(2, [], receive)
    assert _rows(tmp_path / "db.sqlite3", "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert _rows(tmp_path / "db.sqlite3", "SELECT COUNT(*) FROM events") == [(0,)]


async def test_wal_is_checkpointed_after_the_commit_not_inside_it(tmp_path: Path) -> None:
    """The commit that acknowledges a big submit does not copy the WAL into the database
    file (SQLite's automatic checkpoint is off); the checkpointer task does, soon after."""
    db_path = tmp_path / "db.sqlite3"
    async with running_store(db_path) as store:
        store.checkpoint_delay = 3.0
        size_before = _size(db_path)
        jobs = [NewJob(name=f"j{i}", cluster="c", workdir="/w/{id}", spec=JobSpec(argv=("x" * 200, str(i))))
                for i in range(5000)]  # fmt: skip
        await store.create_jobs(jobs)
        assert _size(db_path) == size_before, "the commit checkpointed the WAL itself"
        assert _size(f"{db_path}-wal") > 1_000_000
        deadline = time.monotonic() + 30
        while _size(db_path) <= size_before + 1_000_000:
            assert time.monotonic() < deadline, "the WAL was never checkpointed"
            await anyio.sleep(0.2)


async def test_a_cancelled_read_does_not_freeze_what_later_reads_see(tmp_path: Path) -> None:
    """A read whose caller is cancelled half-way (a client hanging up mid-request) must
    not leave the read connection inside an old snapshot: the next reads see every
    later commit."""
    async with running_store(tmp_path / "db.sqlite3") as store:
        job = NewJob(name="j", cluster="c", workdir="/w/{id}", spec=JobSpec(argv=("x",)))
        await store.create_jobs([job] * 3000)
        for delay in (0, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05):
            with anyio.move_on_after(delay):
                await store.list_jobs(JobFilter(), before_id=None, limit=3000)
            with anyio.move_on_after(delay):
                await store.events_since(0, limit=3000)
            (new,) = await store.create_jobs([job])
            assert (await store.get_job(new)).id == new
            assert (await store.list_jobs(JobFilter(), before_id=None, limit=1))[0].id == new
        assert (await store.count_by_state())["ready"] == 3000 + 10


# --- a full disk --------------------------------------------------------------------------

FULL_AT_PAGES = "60"  # 240 KB: the schema fits, a 300 KB call does not


async def test_a_full_database_says_so_on_every_write_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_FULL (as a full disk gives it) reaches the caller as a SchedulerdError that
    says "database or disk is full", on the one-chunk path and the chunked one alike, and
    the store goes on working for what still fits."""
    monkeypatch.setenv("SCHEDULERD_TEST_MAX_PAGES", FULL_AT_PAGES)
    async with running_store(tmp_path / "db.sqlite3") as store:
        big = NewJob(name="big", cluster="c", workdir="/w", spec=JobSpec(argv=("x" * 300_000,)))
        with pytest.raises(StorageError, match="database or disk is full") as small_path:
            await store.create_jobs([big])
        assert type(small_path.value) is StorageError and "nothing" in small_path.value.message
        send, receive = anyio.create_memory_object_stream[Any](4)
        spec = JobSpec(argv=("y" * 100,))
        many = [
            NewJob(name=f"j{i}", cluster="c", workdir="/w/{id}", spec=spec) for i in range(3000)
        ]
        await send.send(many[:1500])
        await send.send(many[1500:])
        send.close()
        with pytest.raises(StorageError, match="database or disk is full"):
            await store.create_jobs_from(3000, [], receive)
        tiny = NewJob(name="s", cluster="c", workdir="/w", spec=JobSpec(argv=("x",)))
        (small,) = await store.create_jobs([tiny])
        assert (await store.get_job(small)).name == "s"
    assert _rows(tmp_path / "db.sqlite3", "SELECT COUNT(*) FROM jobs") == [(1,)]


async def test_a_full_disk_answers_the_same_on_the_socket_for_small_and_chunked_submits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked path (params over 256 KiB) answered "unhandled errors in a TaskGroup
    (1 sub-exception)" where the small one said "database or disk is full"."""
    monkeypatch.setenv("SCHEDULERD_TEST_MAX_PAGES", FULL_AT_PAGES)
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            errors = []
            small = {"job": {"argv": ["echo", "x" * 200_000]}}
            chunked = {"jobs": [{"argv": ["echo", "y" * 100, str(i)]} for i in range(3000)]}
            assert len(json.dumps(chunked)) > 256 * 1024 > len(json.dumps(small))
            for params in (small, chunked):
                with pytest.raises(RpcError) as caught:
                    await client.call("job.submit", params)
                errors.append(caught.value)
            for error in errors:
                assert error.code == -32012
                assert "database or disk is full" in error.message, error.message
                assert "TaskGroup" not in error.message
            assert (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"] == 1
        finally:
            await client.aclose()
