"""The daemon drives fake batch heads through the real OpenSSH sshd on loopback.

Everything else talks to the in-process asyncssh server; these tests prove the same
paths against ``/usr/sbin/sshd`` (tests/sshd.py): host-key check against known_hosts,
public-key login, exec requests run by the login user's shell, stdin-fed submit
programs, exit statuses, and reconnection after sshd's session processes are killed.

The fake batch commands are put on the session's PATH with ``SetEnv PATH=...`` in the
sshd_config (OpenSSH >= 7.8 applies it after its own default PATH). tests/sshd.py has
no parameter for extra config lines, so ``_sshd_config`` is wrapped for the test.

A missing sshd fails these tests (running_sshd calls pytest.fail): never skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import tests.sshd as sshd_module
from tests.fakebatch.core import FakeHead
from tests.harness import running_daemon, wait_terminal
from tests.helpers.fake_cluster import USER, cluster_settings, submit, wait_state
from tests.sshd import RunningSSHD, running_sshd

SYSTEMS = ["slurm", "pbspro"]


def _with_path(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = sshd_module._sshd_config
    path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"

    def config(*args: Any) -> str:
        return original(*args) + f"SetEnv PATH={path}\n"

    monkeypatch.setattr(sshd_module, "_sshd_config", config)


def _session_processes(sshd: RunningSSHD) -> list[int]:
    """The per-connection sshd processes (children of the listener we started)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid == sshd.pid:
                children.append(int(entry))
    return children


def _kill_sessions(sshd: RunningSSHD) -> int:
    """Cut every SSH connection the way a network failure or an admin would: SIGKILL the
    session processes by pid (the listener keeps accepting new connections)."""
    pids = _session_processes(sshd)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


@pytest.mark.parametrize("system", SYSTEMS)
async def test_jobs_through_openssh_sshd(
    tmp_path: Path, system: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    head = FakeHead.create(tmp_path / "head", bin_dir, flavor=system, user=USER, slots=100)
    ledger = tmp_path / "ledger"
    _with_path(bin_dir, monkeypatch)
    with running_sshd(tmp_path) as sshd:
        settings = cluster_settings(tmp_path, system, sshd)  # type: ignore[arg-type]
        async with running_daemon(settings) as daemon:
            client = await daemon.client()
            try:
                report = await client.call("clusters.check", {"name": "head"})
                assert report["ok"], report

                # completed with exit 0 (and its output), failed with exit 3
                ok = await submit(client, ["sh", "-c", "echo out; echo err >&2"])
                bad = await submit(client, ["sh", "-c", "exit 3"])
                jobs = await wait_terminal(client, [ok, bad], timeout=60)
                assert jobs[ok]["state"] == "completed" and jobs[ok]["exit_code"] == 0
                assert jobs[bad]["state"] == "failed" and jobs[bad]["exit_code"] == 3
                assert Path(jobs[ok]["stdout"]).read_text() == "out\n"
                assert Path(jobs[ok]["stderr"]).read_text() == "err\n"

                # cancel a running job: the head ends it
                long = await submit(client, ["sleep", "60"])
                await wait_state(client, long, {"running"})
                out = await client.call("job.cancel", {"id": long})
                assert out["jobs"][0]["state"] == "cancelled"
                native = (await client.call("job.get", {"id": long}))["native_id"]
                deadline = time.monotonic() + 45  # generous: a loaded machine starts fake jobs late
                while head.job(native)["state"] != "done":
                    assert time.monotonic() < deadline, "the head still runs the cancelled job"
                    await anyio.sleep(0.2)
                assert head.job(native)["end_reason"] == "cancelled"

                # connections killed while jobs run: nothing lost, nothing run twice
                ids = [await submit(client, ["sh", "-c", f"sleep 2; echo $SCHEDULERD_JOB_ID >> {ledger}"])
                       for _ in range(3)]  # fmt: skip
                killed = 0
                for _ in range(5):
                    await anyio.sleep(0.5)
                    killed += _kill_sessions(sshd)
                assert killed >= 1, "no sshd session was open to kill"
                jobs = await wait_terminal(client, ids, timeout=90)
                assert {j["state"] for j in jobs.values()} == {"completed"}
                assert sorted(map(int, ledger.read_text().split())) == ids
                names = [j["name"] for j in head.jobs()]
                assert sorted(names) == sorted({*names}), f"a job was submitted twice: {names}"
                assert len(names) == 6
            finally:
                await client.aclose()
