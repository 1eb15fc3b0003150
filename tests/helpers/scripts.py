"""Running a dialect's rendered job script locally, with arguments no shell may touch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.dialect import Dialect

#: arguments that a script quoting them wrongly would change, split or run
NASTY = (
    "it's",
    'say "hi"',
    "$(touch pwned)",
    "a; rm -rf nothing",
    "two\nlines",
    "$HOME",
    "`id`",
    "",
)


def recording_argv(exit_status: int) -> tuple[str, ...]:
    """A job command that writes its arguments (``NASTY``), NUL-separated, to ``args.bin``
    and ``$NASTY_ENV`` to ``env.txt`` in its current directory, then exits with
    ``exit_status``."""
    record = (
        'for a in "$@"; do printf "%s\\0" "$a"; done > args.bin; '
        f'printf "%s" "$NASTY_ENV" > env.txt; exit {exit_status}'
    )
    return ("sh", "-c", record, "sh", *NASTY)


def run_rendered(dialect: Dialect, job: JobRequest, cwd: Path) -> int:
    """Write the job's script as the dialect renders it and run it with ``/bin/sh`` in
    ``cwd``; its exit status."""
    script = Path(job.script_path)
    script.parent.mkdir(parents=True)
    script.write_text(dialect.render_script(job))
    proc = subprocess.run(
        ["/bin/sh", str(script)], cwd=cwd, capture_output=True, timeout=30, check=False
    )
    return proc.returncode


def recorded(workdir: Path) -> tuple[list[str], str]:
    """What a ``recording_argv`` job wrote in ``workdir``: its arguments and ``$NASTY_ENV``."""
    args = (workdir / "args.bin").read_bytes().split(b"\0")[:-1]
    return [a.decode() for a in args], (workdir / "env.txt").read_text()
