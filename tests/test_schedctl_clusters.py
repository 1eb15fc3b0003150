"""``schedctl clusters`` / ``clusters check|drain|resume``: the real command against a
daemon process on the local cluster, and ``clusters check`` against a fake Slurm head
over SSH (in-process daemon, schedctl's ``main`` in a worker thread)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from schedulerd import cli
from tests.harness import daemon_process, write_config
from tests.helpers.fake_cluster import fake_cluster

LOCAL_CONFIG = """
retry_base = "1s"
[clusters.local]
scheduler = "local"
max_jobs = 2
poll_interval = "0.2s"
"""


def schedctl(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("schedctl")
    argv = [exe] if exe else [sys.executable, "-m", "schedulerd.cli"]
    env = {k: v for k, v in os.environ.items() if k != "SCHEDULERD_SOCKET"}
    return subprocess.run([*argv, "--socket", str(socket_path), *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)  # fmt: skip


def test_help_documents_exit_status_8() -> None:
    assert "8  cluster check failed" in cli.EXIT_CODES_HELP
    assert cli.EXIT_CHECK_FAILED == 8


def test_clusters_list_check_drain_resume_on_a_daemon_process(tmp_path: Path) -> None:
    sock = tmp_path / "sd.sock"
    config = write_config(tmp_path, LOCAL_CONFIG)
    with daemon_process(tmp_path / "state", sock, config):
        out = schedctl(sock, "clusters")
        assert out.returncode == 0, out.stderr
        header, *rows = out.stdout.splitlines()
        assert header.split() == ["NAME", "SCHEDULER", "HOST", "MAX_JOBS", "FOREIGN", "DRAINING",
                                  "STATE", "LAST_POLL", "LAST_ERROR"]  # fmt: skip
        assert len(rows) == 1
        fields = rows[0].split()
        assert fields[:7] == ["local", "local", "-", "2", "0", "no", "ok"]
        assert fields[-1] == "-"  # no error

        listed = schedctl(sock, "--json", "clusters")
        assert listed.returncode == 0 and listed.stderr == ""
        doc = json.loads(listed.stdout)
        assert list(doc) == ["clusters"]
        (local,) = doc["clusters"]
        assert local["name"] == "local" and local["draining"] is False and local["max_jobs"] == 2
        after = json.loads(schedctl(sock, "clusters", "--json").stdout)  # flag after the command
        assert [c["name"] for c in after["clusters"]] == ["local"]

        check = schedctl(sock, "clusters", "check", "local")
        assert check.returncode == 0, check
        assert check.stdout.split()[:2] == ["ok", "shell"]
        report = json.loads(schedctl(sock, "--json", "clusters", "check", "local").stdout)
        assert report["ok"] is True and report["name"] == "local"

        drained = schedctl(sock, "clusters", "drain", "local")
        assert drained.returncode == 0 and drained.stdout.strip() == "local\tdraining"
        assert schedctl(sock, "clusters").stdout.splitlines()[1].split()[5] == "yes"
        assert (
            json.loads(schedctl(sock, "--json", "clusters").stdout)["clusters"][0]["draining"]
            is True
        )
        submitted = schedctl(sock, "--json", "submit", "--", "true")
        jid = json.loads(submitted.stdout)["id"]
        time.sleep(1.0)
        shown = json.loads(schedctl(sock, "--json", "show", str(jid)).stdout)
        assert shown["state"] == "ready"  # nothing goes to a draining cluster

        resumed = schedctl(sock, "--json", "clusters", "resume", "local")
        assert resumed.returncode == 0 and json.loads(resumed.stdout)["draining"] is False
        waited = schedctl(sock, "wait", str(jid), "--timeout", "30")
        assert waited.returncode == 0, waited

        for action in ("check", "drain", "resume"):
            unknown = schedctl(sock, "clusters", action, "mars")
            assert unknown.returncode == 6, unknown
            assert "mars" in unknown.stderr
            as_json = schedctl(sock, "--json", "clusters", action, "mars")
            assert json.loads(as_json.stdout)["error"]["code"] == -32006
        usage = schedctl(sock, "clusters", "check")
        assert usage.returncode == 2


async def run_schedctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """schedctl's main() in a thread, so the daemon in this event loop keeps serving."""
    status = await anyio.to_thread.run_sync(functools.partial(cli.main, list(args)))
    # the in-process daemon logs to the same stdout: keep schedctl's own lines
    out = capsys.readouterr().out.splitlines()
    ours = [line for line in out if re.match(r"(ok  |FAIL|NAME |head |\{)", line)]
    return status, "\n".join(ours) + "\n"


async def test_clusters_check_against_fake_slurm_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fake_cluster(tmp_path, "slurm") as c:
        sock = str(c.daemon.socket)
        status, out = await run_schedctl(capsys, "--socket", sock, "clusters", "check", "head")
        assert status == 0, out
        lines = [line.split(None, 2) for line in out.splitlines()]
        assert {name for _, name, *_ in lines} >= {
            "connect",
            "commands",
            "version",
            "queue",
            "workdir",
        }
        assert {ok for ok, *_ in lines} == {"ok"}

        status, out = await run_schedctl(capsys, "--socket", sock, "clusters")
        assert status == 0
        row = out.splitlines()[1].split()
        assert row[:3] == ["head", "slurm", "127.0.0.1"]

        c.head.set_faults(down=True)
        status, out = await run_schedctl(capsys, "--socket", sock, "clusters", "check", "head")
        assert status == cli.EXIT_CHECK_FAILED == 8
        failed = {line.split()[1] for line in out.splitlines() if line.startswith("FAIL")}
        assert failed & {"version", "queue"}, out
        status, out = await run_schedctl(
            capsys, "--socket", sock, "--json", "clusters", "check", "head"
        )
        assert status == 8
        report = json.loads(out)
        assert report["ok"] is False and report["name"] == "head"
