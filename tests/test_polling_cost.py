"""Polling cost is O(1) SSH commands per head per poll, whatever the job count.

DESIGN.md "Performance targets": *status polling costs O(1) SSH commands per head per
poll*. Each test seeds a fake head's ``queue.json`` directly with 5,000 of our jobs (one
Python start-up per fake ``qsub`` would make submitting them take minutes), points a
:class:`BatchDriver` at it through the in-process SSH server, calls ``poll()`` with the
5,000 :class:`ActiveJob` values and counts the exec requests the server received.

The 5,000 jobs are a mix that exercises every step of a poll:

* 3,000 running and 1,400 queued (100 of them held): the queue command answers them;
* 400 *done and forgotten*: finished (exit 0 or 3), no longer in the queue listing, but
  history/accounting still knows them (LSF's ``bjobs -a`` still lists them: there the
  queue command settles them);
* 200 *purged*: finished (exit 0 or 3) and forgotten by history too; only the exit file
  the job wrapper wrote in ``<workdir>/.schedulerd/`` can tell.

What one poll may cost, counted per command kind (``classify``):

=============  ===========================================================================
kind           allowed per poll
=============  ===========================================================================
queue          exactly 1 (``qstat -f -F json IDS`` / ``qstat -x IDS`` / ``bjobs -a`` /
               ``condor_q`` / ``squeue``)
history        at most 1 (``qstat -x -f -F json`` / ``bhist -l`` / ``condor_history`` /
               ``sacct``); Torque has none a user can ask, so 0 there
exit-file      at most 1 (``sh -c 'for f in "$@"...'`` printing every exit file)
version        1 on the driver's first use only (``qstat --version`` / ``lsid`` /
               ``condor_version`` / ``sbatch --version``), 0 afterwards
count          PBS Pro/Torque only: ``qselect -u USER`` on polls 1, 11, 21, ... (their queue
               command lists only our ids, so the user's whole job count -- the
               ``max_jobs`` limit counts jobs we did not submit -- is asked every
               ``COUNT_EVERY`` = 10th poll); 0 for the others, whose queue command lists
               all of the user's jobs
=============  ===========================================================================

So the first poll costs at most 5 commands (PBS/Torque: version, count, queue, history,
exit-file) and every later poll at most 3, plus the count on every 10th poll. Nothing
else may run: the total of exec requests must equal the sum of the classified ones.
The observations must be right as well: running jobs RUNNING, queued QUEUED, held HELD,
every finished one COMPLETED/FAILED with its exit code.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from schedulerd.daemon import create_dialect
from schedulerd.drivers.api import ActiveJob
from schedulerd.drivers.base import JobRequest, Phase
from schedulerd.drivers.batch import COUNT_EVERY, BatchDriver
from schedulerd.drivers.ssh import TIMEOUT_PROBE, SSHTransport, unwrap_timeout
from schedulerd.drivers.wrapper import EXIT_MARKER
from tests.fakebatch.core import FakeHead
from tests.sshserver import SSHTestServer, running_ssh_server

SYSTEMS = ["pbspro", "torque", "lsf", "htcondor", "slurm"]
USER = getpass.getuser()
SERVER = "fakehead"

N_RUNNING = 3000
N_QUEUED = 1300
N_HELD = 100
N_FORGOTTEN = 400
N_PURGED = 200
TOTAL = N_RUNNING + N_QUEUED + N_HELD + N_FORGOTTEN + N_PURGED
assert TOTAL == 5000

ID_FORMAT = {
    "pbspro": "{seq}." + SERVER,
    "torque": "{seq}." + SERVER,
    "lsf": "{seq}",
    "htcondor": "{seq}.0",
    "slurm": "{seq}",
}
VERSION_COMMAND = {
    "pbspro": "qstat --version",
    "torque": "qstat --version",
    "lsf": "lsid",
    "htcondor": "condor_version",
    "slurm": "sbatch --version",
}
HAS_HISTORY = {"pbspro": True, "torque": False, "lsf": True, "htcondor": True, "slurm": True}
COUNTS_WITH_QSELECT = {"pbspro", "torque"}


def classify(system: str, command: str) -> str:
    """The kind of one exec request (see the module docstring)."""
    head = command[:300]
    if EXIT_MARKER.strip() in command and head.startswith("sh -c "):
        return "exit-file"
    words = head.split()
    while words and (words[0] == "env" or "=" in words[0]):
        words = words[1:]  # "env SLURM_TIME_FORMAT=%s squeue ..."
    text = " ".join(words)
    if text.startswith(VERSION_COMMAND[system]):
        return "version"
    prog = words[0] if words else ""
    if prog == "qselect":
        return "count"
    if system == "pbspro" and prog == "qstat":
        return "history" if "-x" in words else "queue"
    if system in ("pbspro", "torque") and prog == "true":
        return "queue"  # the dialect's no-op queue command when no id is active
    queue_prog = {"torque": "qstat", "lsf": "bjobs", "htcondor": "condor_q", "slurm": "squeue"}
    history_prog = {"lsf": "bhist", "htcondor": "condor_history", "slurm": "sacct"}
    if prog == queue_prog.get(system):
        return "queue"
    if prog == history_prog.get(system):
        return "history"
    return f"other: {head[:80]}"


def _extra(system: str, name: str) -> dict[str, Any]:
    if system in ("pbspro", "torque"):
        return {"env": {}, "rerunable": False, "account": None, "submit_args": "job.sh"}
    if system == "lsf":
        return {"env": {"LSB_JOBNAME": name}, "project": "default", "resources": "",
                "rerunnable": False, "events": []}  # fmt: skip
    if system == "htcondor":
        return {"batch_name": name, "accounting_group": None, "custom": {}}
    return {"account": None, "requeue": False}


def seed(
    head: FakeHead, system: str, remote: Path, kinds: list[str] | None = None
) -> tuple[list[ActiveJob], dict[str, tuple[Phase, int | None]]]:
    """Write 5,000 jobs into queue.json (and exit files for the finished ones).

    Returns the ActiveJob values the daemon would poll and, per native id, the phase and
    exit code the poll must report.
    """
    now = time.time()
    jobs: dict[str, dict[str, Any]] = {}
    active: list[ActiveJob] = []
    expected: dict[str, tuple[Phase, int | None]] = {}
    kinds = kinds or (["running"] * N_RUNNING + ["queued"] * N_QUEUED + ["held"] * N_HELD
             + ["forgotten"] * N_FORGOTTEN + ["purged"] * N_PURGED)  # fmt: skip
    for n, kind in enumerate(kinds):
        seq = 1000 + n
        job_id = 10_000 + n
        request = JobRequest(job_id=job_id, attempt=1, name=f"sd-{job_id}-1", argv=("true",),
                             workdir=f"{remote}/{job_id}")  # fmt: skip
        native = ID_FORMAT[system].format(seq=seq)
        submitted = now - 1800 + n * 0.1
        done = kind in ("forgotten", "purged")
        code = (3 if n % 3 == 0 else 0) if done else None
        record: dict[str, Any] = {
            "id": native, "seq": seq, "name": request.name, "owner": USER,
            "queue": "batch", "script": request.script_path, "workdir": request.workdir,
            "stdout": request.stdout_path, "stderr": request.stderr_path,
            "walltime": None, "cpus": None, "memory_mb": None,
            "state": {"running": "running", "queued": "queued", "held": "held"}.get(kind, "done"),
            "exit_code": code, "end_reason": "exited" if done else None,
            "hold_reason": "user" if kind == "held" else None,
            "submit_time": submitted,
            "start_time": submitted + 5 if kind in ("running", "forgotten", "purged") else None,
            "end_time": submitted + 60 if done else None,
            "pid": None, "forgotten": done, "purged": kind == "purged",
            "extra": _extra(system, request.name),
        }  # fmt: skip
        jobs[native] = record
        if done:
            control = Path(request.control_dir)
            control.mkdir(parents=True)
            Path(request.exit_path).write_text(
                f"exit_code={code}\nstarted={int(submitted + 5)}\nfinished={int(submitted + 60)}\nsignal=\n"
            )
        active.append(
            ActiveJob(job_id=job_id, native_id=native, request=request, submitted_at=submitted)
        )
        phase = {"running": Phase.RUNNING, "queued": Phase.QUEUED, "held": Phase.HELD}.get(kind)
        if phase is None:
            phase = Phase.COMPLETED if code == 0 else Phase.FAILED
        expected[native] = (phase, code)
    (head.home / "queue.json").write_text(json.dumps({"next": 1000 + len(kinds), "jobs": jobs}))
    return active, expected


def _driver(system: str, server: SSHTestServer, remote: Path) -> BatchDriver:
    return BatchDriver(
        create_dialect(system),
        SSHTransport(server.options(max_channels=4)),
        user=USER,
        exit_read_timeout=300.0,
        command_timeout=120.0,
        workdir=str(remote),
    )


async def _counted_poll(
    system: str, server: SSHTestServer, head: FakeHead, driver: BatchDriver, active: list[ActiveJob]
) -> tuple[Any, Counter[str], int]:
    """One poll; (result, commands by kind, batch commands the fake head logged)."""
    start_exec, start_cmds = server.exec_count, len(server.commands)
    head.clear_calls()
    result = await driver.poll(active)
    sent = server.commands[start_cmds:]
    assert server.exec_count - start_exec == len(sent)
    # the transport's own timeout(1) probe, once per connection, is no poll command;
    # the others are the driver's commands inside the transport's timeout wrapper
    commands = [unwrap_timeout(c) for c in sent if c != TIMEOUT_PROBE]
    assert len(sent) - len(commands) <= 1
    kinds = Counter(classify(system, c) for c in commands)
    return result, kinds, len(head.calls())


def _check_observations(result: Any, expected: dict[str, tuple[Phase, int | None]]) -> None:
    observations = result.observations
    wrong = {}
    for native, (phase, code) in expected.items():
        obs = observations.get(native)
        got = (obs.phase, obs.exit_code) if obs is not None else None
        if phase in (Phase.COMPLETED, Phase.FAILED):
            ok = got == (phase, code)
        else:
            ok = got is not None and got[0] is phase
        if not ok:
            wrong[native] = (got, (phase, code))
    assert not wrong, f"{len(wrong)} wrong observations, e.g. {list(wrong.items())[:5]}"
    assert set(observations) == set(expected)


@pytest.mark.timeout(600)  # ~10 s here; far slower on a loaded, shared CI machine
@pytest.mark.parametrize("system", SYSTEMS)
async def test_one_poll_of_5000_jobs_is_a_constant_number_of_commands(
    tmp_path: Path, system: str
) -> None:
    bin_dir = tmp_path / "bin"
    # slots=0: the fake starts nothing by itself; the seeded states are the truth
    head = FakeHead.create(
        tmp_path / "head", bin_dir, flavor=system, user=USER, slots=0, server=SERVER
    )
    remote = tmp_path / "remote"
    active, expected = seed(head, system, remote)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        driver = _driver(system, server, remote)
        try:
            # --- poll 1: first use of the driver ------------------------------------------
            result, kinds, logged = await _counted_poll(system, server, head, driver, active)
            history = 1 if HAS_HISTORY[system] else 0
            counted = 1 if system in COUNTS_WITH_QSELECT else 0
            allowed = {
                "version": 1,
                "count": counted,
                "queue": 1,
                "history": history,
                "exit-file": 1,
            }
            assert kinds == +Counter(allowed), (system, kinds)
            # the fake head ran exactly the batch commands (the exit-file read is plain sh)
            assert logged == sum(kinds.values()) - kinds["exit-file"]
            _check_observations(result, expected)
            assert result.foreign_jobs == 0  # every listed job is one of ours

            # --- poll 2: steady state -----------------------------------------------------
            result, kinds, logged = await _counted_poll(system, server, head, driver, active)
            steady = {"queue": 1, "history": history, "exit-file": 1}
            assert kinds == +Counter(steady), (system, kinds)
            assert sum(kinds.values()) <= 3
            _check_observations(result, expected)

            # --- polls 3..COUNT_EVERY+1: only the count comes back, on poll 11 ------------
            # (what these polls cost does not depend on the job count: an empty head keeps
            # them fast)
            (head.home / "queue.json").write_text(json.dumps({"next": 1000 + TOTAL, "jobs": {}}))
            counts = []
            for _ in range(3, COUNT_EVERY + 2):
                _, kinds, _ = await _counted_poll(system, server, head, driver, [])
                assert set(kinds) <= {"queue", "count"} and kinds["queue"] == 1, kinds
                counts.append(kinds["count"])
            assert counts == [0] * (COUNT_EVERY - 2) + [counted]
        finally:
            await driver.aclose()


@pytest.mark.timeout(600)  # ~10 s here; far slower on a loaded, shared CI machine
async def test_5000_jobs_leaving_the_queue_at_once_are_settled_by_exit_files(
    tmp_path: Path,
) -> None:
    """After an outage (or on Torque, which has no history) every job may have left the
    queue between two polls: the exit-file read must still be one command that works."""
    system = "slurm"
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(
        tmp_path / "head", bin_dir, flavor=system, user=USER, slots=0, server=SERVER
    )
    remote = tmp_path / "remote"
    active, expected = seed(head, system, remote, kinds=["purged"] * TOTAL)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        driver = _driver(system, server, remote)
        try:
            result, kinds, _ = await _counted_poll(system, server, head, driver, active)
            assert kinds == Counter({"version": 1, "queue": 1, "history": 1, "exit-file": 1})
            _check_observations(result, expected)
        finally:
            await driver.aclose()


@pytest.mark.timeout(600)  # ~10 s here; far slower on a loaded, shared CI machine
@pytest.mark.parametrize("system", ["pbspro", "torque"])
async def test_12000_ids_on_a_head_that_takes_ids_fit_in_one_command(
    tmp_path: Path, system: str
) -> None:
    """PBS/Torque status commands take our ids as arguments; 12,000 of them exceed what
    one command line may carry (128 KiB), so they go on stdin through xargs: still ONE
    SSH command per poll, and every job is seen."""
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(
        tmp_path / "head", bin_dir, flavor=system, user=USER, slots=0, server=SERVER
    )
    remote = tmp_path / "remote"
    active, expected = seed(head, system, remote, kinds=["running"] * 7000 + ["queued"] * 5000)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp_path, env=env) as server:
        driver = _driver(system, server, remote)
        try:
            await driver.detect_version()
            result, kinds, _ = await _counted_poll(system, server, head, driver, active)
            queue = [k for k in kinds if k.startswith("other: xargs") and "qstat" in k]
            assert len(queue) == 1 and kinds[queue[0]] == 1, kinds
            assert sum(kinds.values()) - kinds["count"] == 1, kinds
            assert len(head.calls()) >= 6  # xargs ran qstat once per 2,000 ids
            _check_observations(result, expected)
        finally:
            await driver.aclose()
