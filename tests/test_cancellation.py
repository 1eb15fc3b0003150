"""Cancellation at every remote await of submit, poll and cancel (STYLE.md rule 12).

The daemon drives a fake head over SSH; a fault makes one batch command hang. While the
daemon awaits it, the whole daemon is cancelled (every task at its current await, as a
crash would leave it). A second daemon on the same state directory then finishes the
work, and the store and the head must agree: no job lost, none submitted twice (the fake
head's ledger), every row what its events replay to.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from schedulerd.config import Settings
from tests.fakebatch.core import FakeHead, gated
from tests.harness import TERMINAL, running_daemon, wait_terminal
from tests.helpers.fake_cluster import USER, cluster_settings, submit, wait_state
from tests.helpers.store_checks import assert_rows_replay
from tests.sshserver import running_ssh_server

HANG = 600  # seconds: far longer than any test; the SSH server kills the command first

#: await point -> the batch command that hangs there, per system (PBS Pro reads its
#: history with qstat too, and Torque has none: their poll is the queue's)
POINTS: dict[str, dict[str, str]] = {
    "submit": {
        "slurm": "sbatch",
        "lsf": "bsub",
        "htcondor": "condor_submit",
        "pbspro": "qsub",
        "torque": "qsub",
    },
    "poll-queue": {
        "slurm": "squeue",
        "lsf": "bjobs",
        "htcondor": "condor_q",
        "pbspro": "qstat",
        "torque": "qstat",
    },
    "poll-history": {"slurm": "sacct", "lsf": "bhist", "htcondor": "condor_history"},
    "cancel": {
        "slurm": "scancel",
        "lsf": "bkill",
        "htcondor": "condor_rm",
        "pbspro": "qdel",
        "torque": "qdel",
    },
    # a hold/release intent being carried out on a queued job (the head has no free slot)
    "hold": {
        "slurm": "scontrol",
        "lsf": "bstop",
        "htcondor": "condor_hold",
        "pbspro": "qhold",
        "torque": "qhold",
    },
    "release": {
        "slurm": "scontrol",
        "lsf": "bresume",
        "htcondor": "condor_release",
        "pbspro": "qrls",
        "torque": "qrls",
    },
}
#: where the crash leaves the job under test in the store
LEFT_IN = {
    "submit": "submitting",
    "poll-queue": "running",
    "poll-history": "running",
    "cancel": "cancelled",
    "hold": "queued",
    "release": "held",
}
#: the state a hold/release intent left by the crash takes once carried out after it
INTENT_LEADS_TO = {"hold": "held", "release": "queued"}
#: faults that make a system ask its history at all: LSF keeps finished jobs in ``bjobs -a``
#: (so the queue tells their end) unless they are forgotten at once
REACH_HISTORY: dict[str, dict[str, object]] = {"lsf": {"forget_finished": True}}
CASES = [(point, system) for point, by_system in POINTS.items() for system in by_system]


def _count(head: FakeHead, command: str) -> int:
    return sum(1 for call in head.calls() if call[0] == command)


async def _hang_then_crash(
    settings: Settings,
    head: FakeHead,
    point: str,
    command: str,
    gate: Path,
) -> tuple[int, int]:
    """The first daemon: a warm-up job to the end (versions detected, one full cycle),
    then the job under test until the daemon awaits ``command``; then everything is
    cancelled. The ids of the warm-up job and of the job under test."""
    with anyio.CancelScope() as crash:
        async with running_daemon(settings) as d:
            client = await d.client()
            try:
                warm = await submit(client, ["true"])
                await wait_terminal(client, [warm], timeout=60)
                before = _count(head, command)
                if point == "submit":
                    head.set_faults(hang={command: HANG})
                    jid = await submit(client, [*gated(gate)])
                elif point in INTENT_LEADS_TO:
                    head.set_config(slots=0)
                    jid = await submit(client, [*gated(gate)])
                    await wait_state(client, jid, {"queued"}, timeout=60)
                    if point == "release":
                        await client.call("job.hold", {"id": jid})
                        await wait_state(client, jid, {"held"}, timeout=60)
                        before = _count(head, command)
                    head.set_faults(hang={command: HANG})
                    await client.call(f"job.{point}", {"id": jid})
                else:
                    jid = await submit(client, [*gated(gate)])
                    await wait_state(client, jid, {"running"}, timeout=60)
                    extra = REACH_HISTORY.get(head.config["flavor"], {})
                    head.set_faults(
                        hang={command: HANG}, **(extra if point == "poll-history" else {})
                    )
                    if point == "poll-history":
                        await anyio.Path(
                            gate
                        ).touch()  # the job ends and leaves the queue: its history is read
                    elif point == "cancel":
                        await client.call("job.cancel", {"id": jid})
                with anyio.fail_after(60):  # the daemon is in the command that hangs
                    while _count(head, command) == before:
                        await anyio.sleep(0.05)
                crash.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await client.aclose()
    assert crash.cancelled_caught
    return warm, jid


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("point", "system"), CASES)
async def test_cancelled_mid_await_then_restarted(tmp_path: Path, point: str, system: str) -> None:
    command = POINTS[point][system]
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=100)
    gate = tmp_path / "gate"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        settings = cluster_settings(tmp_path, system, server)
        warm, jid = await _hang_then_crash(settings, head, point, command, gate)
        with sqlite3.connect(settings.database_path) as db:
            (left_in,) = db.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
        assert left_in == LEFT_IN[point]  # cancelled in the middle, not before or after
        sent = _count(head, command)  # the last one hung and was killed before it acted
        head.set_faults(hang={})
        on_head = [j["id"] for j in head.jobs() if j["name"] == f"sd-{jid}-1"]
        async with running_daemon(settings) as d:
            client = await d.client()
            try:
                if point == "cancel":  # the cancel intent survived: carried out on the head
                    (native,) = on_head
                    with anyio.fail_after(60):
                        while head.job(native)["state"] != "done":
                            await anyio.sleep(0.05)
                    assert head.job(native)["end_reason"] == "cancelled"
                if point in INTENT_LEADS_TO:  # the intent survived: carried out after all
                    await wait_state(client, jid, {INTENT_LEADS_TO[point]}, timeout=60)
                    assert _count(head, command) > sent  # sent again (the first never acted)
                    if point == "hold":
                        await client.call("job.release", {"id": jid})
                        await wait_state(client, jid, {"queued"}, timeout=60)
                    head.set_config(slots=100)
                    with sqlite3.connect(settings.database_path) as db:
                        assert db.execute("SELECT COUNT(*) FROM head_intents").fetchone() == (0,)
                await anyio.Path(gate).touch()
                jobs = await wait_terminal(client, [warm, jid], timeout=90)
                listed = (await client.call("job.list", {}))["jobs"]
            finally:
                await client.aclose()
    expected = "cancelled" if point == "cancel" else "completed"
    assert (jobs[warm]["state"], jobs[jid]["state"]) == ("completed", expected), jobs
    assert sorted(j["id"] for j in listed) == [warm, jid]  # none lost, none made up
    names = sorted(j["name"] for j in head.jobs())
    assert names == sorted([f"sd-{warm}-1", f"sd-{jid}-1"])  # each submitted exactly once
    rows = assert_rows_replay(settings.database_path)
    assert {state for state, *_ in rows.values()} <= TERMINAL
