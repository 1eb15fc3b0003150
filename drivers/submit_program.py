"""The submit program: the pure part of a batch submit (DESIGN.md "Drivers").

A round's jobs reach the head as ONE ``sh`` program sent over one command's stdin
(:func:`render_submit_program`): it makes the job folders, writes every job's files,
submits each job and prints one delimited section per job, which
:func:`parse_submit_program_output` reads back. ``BatchDriver.submit`` only sends the
program and acts on the sections. No I/O here.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence

from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.dialect import Dialect

SUBMIT_MARK = "@@schedulerd-submit"
#: the submit program's status for a job whose directory or script could not be made
PREPARE_FAILED = 98


def job_files(dialect: Dialect, job: JobRequest) -> dict[str, str]:
    """Every file a job's submit writes (path -> content): its script, then the dialect's
    extra files. Raises ValueError for a job the dialect cannot render."""
    return {job.script_path: dialect.render_script(job), **dialect.extra_files(job)}


def render_submit_program(
    dialect: Dialect, jobs: Sequence[JobRequest], files: Sequence[dict[str, str]] | None = None
) -> str:
    """One ``sh`` program that writes every job's files and submits each job.

    ``files``: each job's :func:`job_files` where the caller rendered them already.
    Workdirs are absolute (``BatchDriver`` makes them so): each submit runs in its job's
    workdir and finds the script there by its full path.

    Only the submit commands start a process per job: directories, stale exit files and
    modes are handled by one ``mkdir``/``rm``/``chmod`` for the whole batch, files are
    written with the ``printf`` builtin. For each job n it prints
    ``@@schedulerd-submit-out n``, the submit's stdout, ``@@schedulerd-submit n <status>``,
    the submit's stderr, ``@@schedulerd-submit-end``.
    """
    q = shlex.quote
    if files is None:
        files = [job_files(dialect, job) for job in jobs]
    written = {path: content for one in files for path, content in one.items()}
    dirs = sorted({d for job in jobs for d in (job.workdir, job.control_dir)})
    # "--" before every operand: a path that starts with "-" is never read as an option.
    # The batched mkdir/rm/chmod go on past an operand they cannot handle, and each job
    # is checked on its own before its submit: one job's bad directory fails that job.
    lines = [
        "__sd_e=$(mktemp) || exit 97",
        "trap 'rm -f -- \"$__sd_e\"' EXIT",
        "__sd_home=$(pwd)",
        # job folders we create are private (0700); the umask stays in the subshell,
        # so the batch system never sees it (sbatch would pass it on to the job)
        f"(umask 077 && mkdir -p -- {' '.join(map(q, dirs))}) 2>/dev/null",
        f"rm -f -- {' '.join(q(job.exit_path) for job in jobs)}",
    ]
    for path, content in written.items():
        lines.append(f"printf '%s\\n' {q(content.rstrip(chr(10)))} > {q(path)} 2>/dev/null")
    lines.append(f"chmod 700 -- {' '.join(q(job.script_path) for job in jobs)} 2>/dev/null")
    for n, job in enumerate(jobs):
        dirs_of_job = f"{q(job.workdir)} {q(job.control_dir)}"
        lines.append(f"printf '{SUBMIT_MARK}-out {n}\\n'")
        lines.append(
            f'if cd -- "$__sd_home" && cd -- {q(job.workdir)} && [ -f {q(job.script_path)} ]; then'
            f' {shlex.join(dialect.submit_argv(job))} </dev/null 2>"$__sd_e"; __sd_rc=$?;'
            # say why: mkdir again, for this job only, to show its complaint
            f" else {{ printf 'cannot prepare %s\\n' {q(job.workdir)};"
            f' cd -- "$__sd_home" && (umask 077 && mkdir -p -- {dirs_of_job}); }} >"$__sd_e" 2>&1;'
            f" __sd_rc={PREPARE_FAILED}; fi"
        )
        lines.append(f"printf '\\n{SUBMIT_MARK} {n} %s\\n' \"$__sd_rc\"")
        lines.append(
            'while IFS= read -r __sd_l || [ -n "$__sd_l" ]; do printf \'%s\\n\' "$__sd_l"; done < "$__sd_e"'
        )
        lines.append(f"printf '{SUBMIT_MARK}-end\\n'")
    return "\n".join(lines) + "\n"


def _delimiter(content: str) -> str:
    while True:
        token = f"SCHEDULERD_EOF_{secrets.token_hex(8)}"
        if token not in content:
            return token


def parse_submit_program_output(output: str, count: int) -> dict[int, tuple[int, str, str]]:
    """index -> (exit status, stdout, stderr) for every job whose section is complete."""
    sections: dict[int, tuple[int, str, str]] = {}
    lines = output.split("\n")
    i = 0
    while i < len(lines):
        parts = lines[i].split(" ")
        i += 1
        if len(parts) != 2 or parts[0] != f"{SUBMIT_MARK}-out" or not parts[1].isdigit():
            continue
        index = int(parts[1])
        out: list[str] = []
        err: list[str] = []
        status: int | None = None
        complete = False
        while i < len(lines):
            line = lines[i]
            i += 1
            words = line.split(" ")
            if (
                status is None
                and len(words) == 3
                and words[0] == SUBMIT_MARK
                and words[1] == str(index)
            ):
                try:
                    status = int(words[2])
                except ValueError:
                    break
            elif status is not None and line == f"{SUBMIT_MARK}-end":
                complete = True
                break
            elif status is None:
                out.append(line)
            else:
                err.append(line)
        if complete and status is not None and 0 <= index < count:
            sections[index] = (status, "\n".join(out).strip("\n"), "\n".join(err).strip("\n"))
    return sections


def render_dry_run_program(dialect: Dialect, probe: JobRequest, argv: Sequence[str]) -> str:
    """One ``sh`` program for ``clusters check``: write the probe job's files (each as a
    here-document) and run the dialect's dry-run submit ``argv`` in its workdir."""
    program = [f"mkdir -p -- {shlex.quote(probe.control_dir)}"]
    for path, content in job_files(dialect, probe).items():
        delimiter = _delimiter(content)
        program += [f"cat > {shlex.quote(path)} <<'{delimiter}'", content.rstrip("\n"), delimiter]
    program.append(f"cd -- {shlex.quote(probe.workdir)} && {shlex.join(argv)}")
    return "\n".join(program) + "\n"
