"""One dialect's commands run against a fake batch head (tests/fakebatch), without the daemon.

The dialect round trips of every batch system use it: a job is rendered and submitted with
the dialect's own argv, the queue and the history are read back with its parsers.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.dialect import Dialect
from tests.fakebatch.core import FakeHead

WAIT = 45.0  # generous: a loaded machine starts fake jobs late


class DialectHead:
    """A fake head of ``flavor`` in ``tmp_path`` and ``dialect`` speaking to it.

    ``poll_by_id``: ``observe`` names the job in the status command (as PBS and Torque
    tests poll); otherwise it reads the user's whole queue.
    """

    def __init__(
        self,
        tmp_path: Path,
        dialect: Dialect,
        flavor: str,
        *,
        poll_by_id: bool = False,
        **config: object,
    ) -> None:
        self.dialect = dialect
        self.bin = tmp_path / "bin"
        self.fake = FakeHead.create(tmp_path / "home", self.bin, flavor=flavor, **config)
        self.workdir = tmp_path / "work"
        (self.workdir / ".schedulerd").mkdir(parents=True)
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        self.user = str(self.fake.config["user"])
        self.poll_by_id = poll_by_id
        self.count = 0

    def run(self, argv: list[str]) -> tuple[str, str, int]:
        """Run one command line on the head (through the shell, as the drivers do)."""
        proc = subprocess.run(
            shlex.join(argv),
            shell=True,
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout, proc.stderr, proc.returncode

    def job(self, *argv: str, **kw: object) -> JobRequest:
        """The next job (ids 1, 2, ... named ``sd-N-1``) running ``argv`` in the workdir."""
        self.count += 1
        return JobRequest(
            job_id=self.count,
            attempt=1,
            name=f"sd-{self.count}-1",
            argv=argv,
            workdir=str(self.workdir),
            **kw,  # type: ignore[arg-type]
        )

    def write(self, job: JobRequest) -> None:
        """Write the job's script and the dialect's extra files, as a submit does."""
        script = Path(job.script_path)
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(self.dialect.render_script(job))
        script.chmod(0o755)
        for path, content in self.dialect.extra_files(job).items():
            Path(path).write_text(content)

    def submit(self, job: JobRequest) -> str:
        """Write and submit ``job``; its native id."""
        self.write(job)
        return self.dialect.parse_submit(*self.run(self.dialect.submit_argv(job)))

    def launch(self, *argv: str, **kw: object) -> str:
        """Submit the next job running ``argv``; its native id."""
        return self.submit(self.job(*argv, **kw))

    def status(self, *native_ids: str) -> dict[str, Observation]:
        """The status command over ``native_ids`` (none: the user's whole queue)."""
        return self.dialect.parse_status(
            *self.run(self.dialect.status_argv(self.user, list(native_ids)))
        )

    def observe(self, native_id: str) -> Observation | None:
        """What the status command says of one job (``None``: not in the queue)."""
        return self.status(*([native_id] if self.poll_by_id else [])).get(native_id)

    def history(self, *native_ids: str) -> dict[str, Observation]:
        """The history command over ``native_ids``, back one minute."""
        argv = self.dialect.history_argv(self.user, list(native_ids), time.time() - 60)
        assert argv is not None
        return self.dialect.parse_history(*self.run(argv))

    def wait(
        self, check: Callable[[], Observation | None], phases: set[Phase], timeout: float = WAIT
    ) -> Observation:
        """Poll ``check`` until it sees one of ``phases``."""
        deadline = time.monotonic() + timeout
        while True:
            obs = check()
            if obs is not None and obs.phase in phases:
                return obs
            if time.monotonic() > deadline:
                raise AssertionError(f"still {obs}, not {phases}, after {timeout} s")
            time.sleep(0.1)

    def wait_for(self, native_id: str, phases: set[Phase], timeout: float = WAIT) -> Observation:
        """Poll the status of ``native_id`` until it is in one of ``phases``."""
        return self.wait(lambda: self.observe(native_id), phases, timeout)

    def wait_status(self, native_id: str, pred: Callable[[Observation | None], bool]) -> None:
        """Poll the user's queue until ``pred`` holds of what it says of ``native_id``."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if pred(self.status().get(native_id)):
                return
            time.sleep(0.1)
        raise AssertionError(f"status of {native_id} never matched")

    def finish(self, native_id: str) -> Observation:
        """Wait for ``native_id`` to leave the queue; what the history says of it."""
        self.wait_status(native_id, lambda o: o is None)
        return self.history(native_id)[native_id]
