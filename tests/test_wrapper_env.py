"""A job's ``env`` cannot reach the wrapper: its names are reserved, and the job's PATH is
the job's alone (the wrapper's ``date``/``mv`` still run, so the exit file is written)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from schedulerd.client import RpcError
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.wrapper import parse_exit_file, render_wrapper
from schedulerd.errors import InvalidSpec
from schedulerd.jobspec import ClusterView, JobSpecIn, build_new_jobs
from tests.harness import local_settings, running_daemon, wait_terminal

VIEWS = {"local": ClusterView(name="local", workdir="/tmp/sd", default_queue=None, is_local=True)}


def job(tmp_path: Path, *argv: str, env: dict[str, str]) -> JobRequest:
    return JobRequest(
        job_id=7, attempt=1, name="sd-7-1", argv=argv, workdir=str(tmp_path / "w"), env=env
    )


def run_wrapper(tmp_path: Path, request: JobRequest) -> int:
    Path(request.workdir).mkdir(parents=True, exist_ok=True)
    script = tmp_path / "job.sh"
    script.write_text(render_wrapper(request))
    proc = subprocess.run(
        ["/bin/sh", str(script)], cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    return proc.returncode


@pytest.mark.parametrize("name", ["__sd_exit", "__sd_dir", "__sd_anything", "SCHEDULERD_JOB_ID",
                                  "SCHEDULERD_ATTEMPT", "SCHEDULERD_JOB_NAME"])  # fmt: skip
def test_wrapper_names_are_refused_at_submit(name: str) -> None:
    with pytest.raises(
        InvalidSpec, match=rf"jobs\[0\]: env: {name} is reserved for the job wrapper"
    ):
        build_new_jobs([JobSpecIn(argv=["true"], env={name: "/tmp/x"})], VIEWS, "local")


def test_other_names_are_accepted() -> None:
    rows, _ = build_new_jobs([JobSpecIn(argv=["true"], env={"SCHEDULERD_SOCKET": "/s", "__sdx": "1"})],
                             VIEWS, "local")  # fmt: skip
    assert rows[0].spec.env == {"SCHEDULERD_SOCKET": "/s", "__sdx": "1"}


def test_render_refuses_a_reserved_name_too(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        render_wrapper(job(tmp_path, "true", env={"__sd_exit": "/tmp/x"}))


def test_a_broken_path_fails_the_command_not_the_exit_file(tmp_path: Path) -> None:
    request = job(tmp_path, "true", env={"PATH": "/nonexistent"})
    assert run_wrapper(tmp_path, request) == 127
    record = parse_exit_file(Path(request.exit_path).read_text())
    assert record.exit_code == 127
    assert record.started_at is not None and record.finished_at is not None
    assert os.listdir(request.control_dir) == ["sd-7-1.exit"]  # no temporary file left


def test_the_job_still_gets_its_env(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    request = job(tmp_path, "/bin/sh", "-c", f'printf "%s|%s|%s" "$MODE" "$PATH" "$OTHER" > {out}',
                  env={"MODE": "fast", "PATH": "/usr/bin:/bin", "OTHER": "a 'b'"})  # fmt: skip
    assert run_wrapper(tmp_path, request) == 0
    assert out.read_text() == "fast|/usr/bin:/bin|a 'b'"
    assert parse_exit_file(Path(request.exit_path).read_text()).exit_code == 0


async def test_daemon_job_with_a_broken_path_ends_failed_127(tmp_path: Path) -> None:
    async with running_daemon(local_settings(tmp_path)) as d:
        c = await d.client()
        try:
            with pytest.raises(RpcError, match="__sd_exit is reserved"):
                await c.call(
                    "job.submit", {"job": {"argv": ["true"], "env": {"__sd_exit": "/tmp/x"}}}
                )
            jid = (
                await c.call(
                    "job.submit", {"job": {"argv": ["true"], "env": {"PATH": "/nonexistent"}}}
                )
            )["id"]
            final = (await wait_terminal(c, [jid], timeout=30))[jid]
            assert (final["state"], final["exit_code"]) == ("failed", 127), final
            assert [j["id"] for j in (await c.call("job.list"))["jobs"]] == [
                jid
            ]  # the refused one left nothing
        finally:
            await c.aclose()
