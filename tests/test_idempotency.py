"""job.submit's idempotency key: a call whose reply was lost can be sent again safely.

The same ``token`` again answers the ids of the first call (same shape, same order) and
creates nothing; the same token with other params is refused (-32003); the token is
stored in the jobs' transaction, so it survives a crash just as they do.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd.client import AsyncClient, RpcError
from schedulerd.errors import Conflict
from schedulerd.state.models import JobSpec, NewJob, SubmitKey
from schedulerd.state.store import open_store
from tests.harness import daemon_process, local_settings, running_daemon


def counts(db: Path) -> tuple[int, int, int]:
    """(jobs, events, submissions) rows in the database."""
    conn = sqlite3.connect(db)
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("jobs", "events WHERE from_state IS NULL", "submissions")
        )
    finally:
        conn.close()


# jobs given children first: the store creates parents first, the reply keeps this order
CAMPAIGN = {
    "jobs": [
        {"name": "post", "argv": ["true"], "after": ["mid"]},
        {"name": "mid", "argv": ["true"], "after": ["pre"]},
        {"name": "pre", "argv": ["true"], "env": {"B": "2", "A": "1"}},
    ]
}


async def test_the_same_token_again_answers_the_same_ids_and_creates_nothing(
    tmp_path: Path,
) -> None:
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        try:
            one = {"job": {"argv": ["true"]}, "token": "single-1"}
            first = await client.call("job.submit", one)
            assert first == {"id": 1, "ids": [1]}
            assert await client.call("job.submit", one) == first
            many = {**CAMPAIGN, "token": "campaign-1"}
            created = await client.call("job.submit", many)
            assert sorted(created["ids"]) == [2, 3, 4] and created["ids"] != [2, 3, 4]
            assert await client.call("job.submit", many) == created
            # the same params written otherwise (key order) are the same call
            reordered = {
                "token": "campaign-1",
                "jobs": [dict(reversed(j.items())) for j in CAMPAIGN["jobs"]],
            }
            reordered["jobs"][2]["env"] = {"A": "1", "B": "2"}
            assert await client.call("job.submit", reordered) == created
            # without a token every call is a new one, as before
            assert (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"] == 5
            assert (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"] == 6
        finally:
            await client.aclose()
    assert counts(settings.database_path) == (6, 6, 2)


async def test_the_same_token_with_other_params_is_refused(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        try:
            await client.call("job.submit", {"job": {"argv": ["true"]}, "token": "t"})
            for other in (
                {"job": {"argv": ["false"]}, "token": "t"},
                {"jobs": [{"argv": ["true"]}], "token": "t"},  # same job, other shape
                {"job": {"argv": ["true"], "retries": 1}, "token": "t"},
                {"job": {"argv": ["true"], "cluster": "mars"}, "token": "t"},  # invalid, too
            ):
                with pytest.raises(RpcError) as caught:
                    await client.call("job.submit", other)
                assert caught.value.code == Conflict.code == -32003
                assert caught.value.message == (
                    "token 't' was already used for a different submission (it created job 1);"
                    " send a new token with a new call"
                )
        finally:
            await client.aclose()
    assert counts(settings.database_path) == (1, 1, 1)


@pytest.mark.parametrize("token", ["", "x" * 201])
async def test_a_token_is_1_to_200_characters(tmp_path: Path, token: str) -> None:
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        try:
            with pytest.raises(RpcError, match="token") as caught:
                await client.call("job.submit", {"job": {"argv": ["true"]}, "token": token})
            assert caught.value.code == -32602
            assert (
                await client.call("job.submit", {"job": {"argv": ["true"]}, "token": "x" * 200})
            )["id"] == 1
        finally:
            await client.aclose()
    assert counts(settings.database_path) == (1, 1, 1)


async def test_a_big_chunked_submit_with_a_token(tmp_path: Path) -> None:
    """Params over 256 KiB take the chunked path (methods.jobs.job_submit): the token is stored
    in the same transaction there too."""
    settings = local_settings(tmp_path, slots=1, extra="")
    jobs = [
        {"name": f"j{i}", "argv": ["sh", "-c", f"exit 0 # {'x' * 60} {i}"]} for i in range(5000)
    ]
    jobs.reverse()  # children first below, so the order of the reply is not the stored one
    for n in range(0, 4990, 10):
        jobs[n]["after"] = [jobs[n + 1]["name"]]
    params = {"jobs": jobs, "token": "big-one"}
    assert len(json.dumps(params)) > 256 * 1024
    async with running_daemon(settings) as d:
        client = await d.client()
        try:
            await client.call("clusters.drain", {"name": "local"})  # nothing needs to run
            created = await client.call("job.submit", params, timeout=120)
            assert sorted(created["ids"]) == list(range(1, 5001))
            assert await client.call("job.submit", params, timeout=120) == created
            changed = {"jobs": jobs[:-1], "token": "big-one"}
            with pytest.raises(RpcError, match="already used for a different submission") as caught:
                await client.call("job.submit", changed, timeout=120)
            assert caught.value.code == -32003
            for pos in (0, 1, 4998, 4999):
                job = await client.call("job.get", {"id": created["ids"][pos]})
                assert job["name"] == jobs[pos]["name"]
        finally:
            await client.aclose()
    assert counts(settings.database_path) == (5000, 5000, 1)


async def test_a_call_racing_with_its_own_retry_creates_its_jobs_once(tmp_path: Path) -> None:
    """Both sends miss the first (read) check; the writer's check inside the transaction
    answers the second with the first's ids."""
    store = await open_store(tmp_path / "db.sqlite3")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            rows = [
                NewJob(name=f"j{i}", cluster="c", workdir="/w", spec=JobSpec(argv=("x",)))
                for i in range(3)
            ]
            key = SubmitKey(token="k", digest="d1", order=[2, 0, 1])
            results: list[list[int]] = []

            async def send() -> None:
                results.append(await store.create_jobs(rows, key=key))

            async with anyio.create_task_group() as senders:
                senders.start_soon(send)
                senders.start_soon(send)
            assert results == [[1, 2, 3], [1, 2, 3]]
            stored = await store.submission("k")
            assert stored is not None and stored.ids == [3, 1, 2] and stored.digest == "d1"
            with pytest.raises(Conflict, match="token 'k' was already used"):
                await store.create_jobs(rows, key=SubmitKey(token="k", digest="d2"))
            await store.close()
    finally:
        await store.aclose_connections()
    assert counts(tmp_path / "db.sqlite3") == (3, 3, 1)


async def test_a_token_survives_a_daemon_killed_after_the_reply(tmp_path: Path) -> None:
    state = tmp_path / "state"
    sock = tmp_path / "sd.sock"
    config = tmp_path / "c.toml"
    config.write_text(
        '[clusters.local]\nscheduler = "local"\nmax_jobs = 2\npoll_interval = "0.2s"\n'
    )
    params: dict[str, Any] = {**CAMPAIGN, "token": "survives"}
    with daemon_process(state, sock, config) as proc:
        client = await AsyncClient.connect(sock)
        try:
            created = await client.call("job.submit", params)
        finally:
            await client.aclose()
        proc.send_signal(signal.SIGKILL)  # as if the reply had been lost with it
        proc.wait(timeout=30)
    with daemon_process(state, sock, config):
        client = await AsyncClient.connect(sock)
        try:
            assert await client.call("job.submit", params) == created
            listed = await client.call("job.list", {"limit": 100})
            assert sorted(j["id"] for j in listed["jobs"]) == sorted(created["ids"])
        finally:
            await client.aclose()


def test_schedctl_submit_sends_a_token(tmp_path: Path) -> None:
    """``--token T`` twice: one job; without it every run is a new job."""
    state = tmp_path / "state"
    sock = tmp_path / "sd.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}

    def submit(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "schedulerd.cli", "--socket", str(sock), "submit", *args, "--", "true"],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with daemon_process(state, sock):
        first = submit("--token", "nightly-42")
        assert submit("--token", "nightly-42") == first
        assert len({first, submit(), submit()}) == 3
    conn = sqlite3.connect(state / "schedulerd.sqlite3")
    try:
        tokens = [r[0] for r in conn.execute("SELECT token FROM submissions ORDER BY rowid")]
    finally:
        conn.close()
    assert tokens[0] == "nightly-42" and len(tokens) == 3  # schedctl generated the other two
