"""The submit program (drivers/submit_program.py): the pure builder run by a real ``sh``
on this machine, and the section parser on whole, cut-off and foreign outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.slurm import SlurmDialect
from schedulerd.drivers.submit_program import (
    PREPARE_FAILED,
    SUBMIT_MARK,
    job_files,
    parse_submit_program_output,
    render_dry_run_program,
    render_submit_program,
)


class EchoDialect(SlurmDialect):
    """Slurm's scripts, with a submit that prints the script's first line, a note on
    stderr, and exits with the job id modulo 5 (a real submit command is not needed)."""

    def submit_argv(self, job: JobRequest) -> list[str]:
        script = 'head -n 1 "$1"; echo "note for $2" >&2; exit "$3"'
        return ["sh", "-c", script, "sh", job.script_path, job.name, str(job.job_id % 5)]


def job(job_id: int, workdir: Path | str) -> JobRequest:
    return JobRequest(job_id=job_id, attempt=1, name=f"sd-{job_id}-1", argv=("true",),
                      workdir=str(workdir))  # fmt: skip


def run_sh(program: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s"], input=program, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ})  # fmt: skip


def test_program_writes_scripts_submits_each_job_and_reports_each(tmp_path: Path) -> None:
    dialect = EchoDialect()
    jobs = [job(1, tmp_path / "a"), job(2, tmp_path / "b" / "deeper"), job(3, tmp_path / "c d")]
    proc = run_sh(render_submit_program(dialect, jobs), tmp_path)
    sections = parse_submit_program_output(proc.stdout, len(jobs))
    assert sorted(sections) == [0, 1, 2]
    for n, one in enumerate(jobs):
        status, out, err = sections[n]
        assert status == one.job_id % 5
        assert out == "#!/bin/sh"
        assert err == f"note for {one.name}"
        script = Path(one.script_path)
        assert script.read_text() == dialect.render_script(one)
        assert script.stat().st_mode & 0o777 == 0o700
        control = script.parent
        assert control.stat().st_mode & 0o777 == 0o700  # job folders are private


def test_files_rendered_by_the_caller_are_the_ones_written(tmp_path: Path) -> None:
    one = job(1, tmp_path / "w")
    files = {one.script_path: "#!/bin/sh\necho given\n"}
    proc = run_sh(render_submit_program(EchoDialect(), [one], [files]), tmp_path)
    status, out, _ = parse_submit_program_output(proc.stdout, 1)[0]
    assert (status, out) == (1, "#!/bin/sh")
    assert Path(one.script_path).read_text() == "#!/bin/sh\necho given\n"


def test_a_stale_exit_file_is_removed_before_the_submit(tmp_path: Path) -> None:
    one = job(1, tmp_path / "w")
    Path(one.control_dir).mkdir(parents=True)
    Path(one.exit_path).write_text("exit_code=0\n")
    run_sh(render_submit_program(EchoDialect(), [one]), tmp_path)
    assert not Path(one.exit_path).exists()


def test_a_job_whose_folder_cannot_be_made_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("")
    jobs = [job(1, tmp_path / "plain-file" / "sub"), job(2, tmp_path / "ok")]
    proc = run_sh(render_submit_program(EchoDialect(), jobs), tmp_path)
    sections = parse_submit_program_output(proc.stdout, 2)
    status, out, err = sections[0]
    assert status == PREPARE_FAILED and out == ""
    assert err.startswith(f"cannot prepare {jobs[0].workdir}\n")
    assert "mkdir" in err  # the head's own reason follows
    assert sections[1][0] == 2


def test_job_files_are_the_script_then_the_extra_files() -> None:
    one = job(1, "/w")
    assert job_files(SlurmDialect(), one) == {one.script_path: SlurmDialect().render_script(one)}


def section(n: int, out: str, status: str, err: str, *, end: bool = True) -> str:
    text = f"{SUBMIT_MARK}-out {n}\n{out}\n{SUBMIT_MARK} {n} {status}\n{err}\n"
    return text + (f"{SUBMIT_MARK}-end\n" if end else "")


def test_parser_reads_whole_sections_with_multiline_outputs() -> None:
    output = section(0, "line 1\nline 2", "0", "warn a\nwarn b") + section(1, "", "7", "")
    assert parse_submit_program_output(output, 2) == {
        0: (0, "line 1\nline 2", "warn a\nwarn b"),
        1: (7, "", ""),
    }


def test_parser_leaves_out_a_section_cut_off_before_its_end() -> None:
    output = section(0, "12", "0", "") + section(1, "13", "0", "", end=False)
    assert sorted(parse_submit_program_output(output, 2)) == [0]
    cut_before_status = f"{SUBMIT_MARK}-out 0\n12\n"
    assert parse_submit_program_output(cut_before_status, 1) == {}


@pytest.mark.parametrize(
    "output",
    [
        section(2, "x", "0", ""),  # an index beyond the round
        section(0, "x", "zero", ""),  # a status that is not a number
        f"{SUBMIT_MARK}-out x\nx\n{SUBMIT_MARK} x 0\n{SUBMIT_MARK}-end\n",  # not an index
        "bash: sh: command not found\n",
        "",
    ],
)
def test_parser_ignores_what_is_not_a_section_of_this_round(output: str) -> None:
    assert parse_submit_program_output(output, 2) == {}


def test_a_status_line_for_another_index_is_the_submits_output() -> None:
    output = f"{SUBMIT_MARK}-out 0\n{SUBMIT_MARK} 1 5\n{SUBMIT_MARK} 0 0\n\n{SUBMIT_MARK}-end\n"
    assert parse_submit_program_output(output, 2) == {0: (0, f"{SUBMIT_MARK} 1 5", "")}


def test_dry_run_program_writes_the_files_and_runs_the_argv_in_the_workdir(tmp_path: Path) -> None:
    probe = job(0, tmp_path / ".check")
    argv = ["sh", "-c", 'pwd; cat "$1"', "sh", probe.script_path]
    proc = run_sh(render_dry_run_program(SlurmDialect(), probe, argv), tmp_path)
    assert proc.returncode == 0, proc.stderr
    cwd, _, script = proc.stdout.partition("\n")
    assert cwd == probe.workdir
    assert script == SlurmDialect().render_script(probe).rstrip("\n") + "\n"
