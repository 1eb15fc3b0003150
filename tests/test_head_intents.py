"""Hold and release of jobs on a head are durable intents the poller carries out (like the
kill of a cancel): the reply comes at once, the head gets one command per poll round, the
intent survives an unreachable head and a restart, and a hold withdrawn by a release or
overtaken by a cancel never reaches the head. Over fake heads, checked on the head's own
ledger of commands it ran."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from schedulerd.client import RpcError
from tests.fakebatch.core import FakeHead
from tests.harness import running_daemon, wait_terminal
from tests.helpers.fake_cluster import (
    USER,
    cluster_settings,
    fake_cluster,
    submit,
    wait_state,
)
from tests.helpers.store_checks import assert_rows_replay
from tests.sshserver import SSHTestServer, running_ssh_server

SYSTEMS = ["pbspro", "slurm", "lsf"]
#: the start of each system's hold/release/cancel command as the head's ledger shows it
HOLD = {"pbspro": ["qhold"], "slurm": ["scontrol", "hold"], "lsf": ["bstop"]}
RELEASE = {"pbspro": ["qrls"], "slurm": ["scontrol", "release"], "lsf": ["bresume"]}
CANCEL = {"pbspro": ["qdel"], "slurm": ["scancel"], "lsf": ["bkill"]}


def ran(head: FakeHead, prefix: list[str]) -> int:
    return sum(1 for call in head.calls() if call[: len(prefix)] == prefix)


def intents_in(database: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(database) as db:
        return [
            (int(r[0]), str(r[1])) for r in db.execute("SELECT job_id, action FROM head_intents")
        ]


async def turned_away(server: SSHTestServer, times: int = 2) -> None:
    """Until the daemon tried the (paused) head ``times`` more times: a command that was on
    its way when the test acted has failed by then (calls share one connection attempt at
    a time), so nothing from before reaches the head once it is resumed."""
    since = server.rejected_connections
    deadline = time.monotonic() + 60
    while server.rejected_connections < since + times:
        assert time.monotonic() < deadline, "the daemon stopped trying the head"
        await anyio.sleep(0.1)


@pytest.mark.parametrize("system", SYSTEMS)
async def test_hold_then_release_a_queued_job(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system, slots=0) as c:
        jid = await submit(c.client, ["true"])
        queued = await wait_state(c.client, jid, {"queued"})
        reply = await c.client.call("job.hold", {"id": jid})
        assert reply["requested_on_head"] is True
        assert [j["state"] for j in reply["jobs"]] == ["queued"]  # as it is: the poll decides
        assert reply["jobs"][0]["version"] == queued["version"] + 1  # the request is an event
        held = await wait_state(c.client, jid, {"held"})
        assert ran(c.head, HOLD[system]) == 1
        assert intents_in(c.daemon.settings.database_path) == []  # dropped once done
        reply = await c.client.call("job.release", {"id": jid})
        assert reply["requested_on_head"] is True
        assert [j["state"] for j in reply["jobs"]] == ["held"]
        await wait_state(c.client, jid, {"queued"})
        assert ran(c.head, RELEASE[system]) == 1
        assert held["reason"]
        c.head.set_config(slots=10)
        assert (await wait_terminal(c.client, [jid], timeout=60))[jid]["state"] == "completed"
    assert_rows_replay(c.daemon.settings.database_path)


@pytest.mark.parametrize("system", SYSTEMS)
async def test_intent_survives_a_restart_while_the_head_is_unreachable(
    tmp_path: Path, system: str
) -> None:
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=0)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        settings = cluster_settings(tmp_path, system, server)
        async with running_daemon(settings) as d:
            client = await d.client()
            try:
                jids = [await submit(client, ["true"]) for _ in range(3)]
                for jid in jids:
                    await wait_state(client, jid, {"queued"})
                server.pause()
                await server.drop_connections()
                reply = await client.call("job.hold", {"ids": jids})
                assert reply["requested_on_head"] is True
                await turned_away(server)
            finally:
                await client.aclose()
        assert sorted(intents_in(settings.database_path)) == [(j, "hold") for j in jids]
        assert ran(head, HOLD[system]) == 0
        async with running_daemon(settings) as d:
            client = await d.client()
            try:
                await turned_away(server)
                states = await client.call("job.states", {"ids": jids})
                assert {j["state"] for j in states["jobs"]} == {"queued"}
                server.resume()
                for jid in jids:
                    await wait_state(client, jid, {"held"})
                assert ran(head, HOLD[system]) == 1  # the three in one command
            finally:
                await client.aclose()
        assert intents_in(settings.database_path) == []
        assert_rows_replay(settings.database_path)


@pytest.mark.parametrize("system", SYSTEMS)
async def test_hold_then_release_before_the_worker_acted_sends_nothing(
    tmp_path: Path, system: str
) -> None:
    async with fake_cluster(tmp_path, system, slots=0) as c:
        jid = await submit(c.client, ["true"])
        await wait_state(c.client, jid, {"queued"})
        c.server.pause()
        await c.server.drop_connections()
        await c.client.call("job.hold", {"id": jid})
        await turned_away(c.server)  # it tried, in vain
        reply = await c.client.call("job.release", {"id": jid})  # withdraws the hold
        assert reply["requested_on_head"] is True
        assert [j["state"] for j in reply["jobs"]] == ["queued"]
        assert intents_in(c.daemon.settings.database_path) == []
        await turned_away(c.server)
        answered = (await c.client.call("daemon.info"))["clusters"][0]
        c.server.resume()
        c.head.set_config(slots=10)  # the job runs: the head was asked nothing else
        assert (await wait_terminal(c.client, [jid], timeout=60))[jid]["state"] == "completed"
        assert answered["last_error"]
        assert ran(c.head, HOLD[system]) == 0
        assert ran(c.head, RELEASE[system]) == 0


@pytest.mark.parametrize("system", SYSTEMS)
async def test_cancel_wins_over_a_pending_hold(tmp_path: Path, system: str) -> None:
    async with fake_cluster(tmp_path, system, slots=0) as c:
        jid = await submit(c.client, ["true"])
        await wait_state(c.client, jid, {"queued"})
        c.server.pause()
        await c.server.drop_connections()
        await c.client.call("job.hold", {"id": jid})
        reply = await c.client.call("job.cancel", {"id": jid})
        assert [j["state"] for j in reply["jobs"]] == ["cancelled"]
        assert "requested_on_head" not in reply
        assert intents_in(c.daemon.settings.database_path) == []
        await turned_away(c.server)
        c.server.resume()
        deadline = time.monotonic() + 30
        while ran(c.head, CANCEL[system]) == 0:  # the kill still reaches the head
            assert time.monotonic() < deadline, "the cancel never reached the head"
            await anyio.sleep(0.1)
        assert ran(c.head, HOLD[system]) == 0
        job = await c.client.call("job.get", {"id": jid})
        assert job["state"] == "cancelled"


async def test_a_second_hold_while_one_is_pending_changes_nothing(tmp_path: Path) -> None:
    async with fake_cluster(tmp_path, "pbspro", slots=0) as c:
        jid = await submit(c.client, ["true"])
        await wait_state(c.client, jid, {"queued"})
        with pytest.raises(RpcError, match="cannot release a job that is queued") as refused:
            await c.client.call("job.release", {"id": jid})  # no hold pending: refused
        assert refused.value.code == -32002
        c.server.pause()
        await c.server.drop_connections()
        first = (await c.client.call("job.hold", {"id": jid}))["jobs"][0]
        again = (await c.client.call("job.hold", {"id": jid}))["jobs"][0]
        assert again["version"] == first["version"]
        c.server.resume()
        await wait_state(c.client, jid, {"held"})
        assert ran(c.head, HOLD["pbspro"]) == 1


@pytest.mark.parametrize("system", SYSTEMS)
async def test_cancel_of_a_job_held_on_the_head_removes_it_there(
    tmp_path: Path, system: str
) -> None:
    """It was recorded cancelled but never killed on the head: the job stayed held there,
    and an admin's release would have run it after all."""
    async with fake_cluster(tmp_path, system, slots=0) as c:
        jid = await submit(c.client, ["true"])
        await wait_state(c.client, jid, {"queued"})
        await c.client.call("job.hold", {"id": jid})
        await wait_state(c.client, jid, {"held"})
        reply = await c.client.call("job.cancel", {"id": jid})
        assert [j["state"] for j in reply["jobs"]] == ["cancelled"]
        deadline = time.monotonic() + 60
        while ran(c.head, CANCEL[system]) == 0 or any(j["state"] != "done" for j in c.head.jobs()):
            assert time.monotonic() < deadline, (c.head.calls()[-5:], c.head.jobs())
            await anyio.sleep(0.1)
    assert_rows_replay(c.daemon.settings.database_path)
