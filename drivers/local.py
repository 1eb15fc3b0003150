"""The ``local`` driver: jobs run as detached processes on this machine.

Each job runs the same generated wrapper script the batch drivers submit, in a session
of its own, so that the daemon can stop, crash or restart without touching it
(invariant 3). The native id is ``<wrapper pid>:<session id>:<start time in ticks>``;
the start time guards against a recycled pid. The exit file decides how a job ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import ExitRecord, JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.transport import LocalTransport
from schedulerd.drivers.wrapper import parse_exit_file, render_wrapper
from schedulerd.errors import ParseError

log = structlog.get_logger(__name__)

# The launcher is a session leader (start_new_session); it starts the wrapper in the
# background, prints its pid and exits at once, so the job is never our child.
_LAUNCHER = 'sh "$0" </dev/null >>"$1" 2>>"$2" & echo $!'
DONE_ID = "done"  # native id of a job found finished after a crash (its exit file decides)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # after the command name: state ppid pgrp session ... starttime is field 22 overall
    return fields[0], int(fields[3]), int(fields[19])


def parse_native_id(native_id: str) -> tuple[int, int, int]:
    try:
        pid, sid, start = (int(x) for x in native_id.split(":"))
    except ValueError as exc:
        raise ParseError(f"not a local native id: {native_id!r}") from exc
    return pid, sid, start


class LocalDriver:
    name = "local"

    def __init__(self, *, exit_read_timeout: float = 30.0) -> None:
        self.exit_read_timeout = exit_read_timeout
        self.transport = LocalTransport()  # the "head" is this machine (staging copies)
        self._missing_since: dict[str, float] = {}

    async def submit(self, jobs: Sequence[JobRequest]) -> list[SubmitResult]:
        results = []
        for job in jobs:
            try:
                native_id = await self._launch(job)
            except (OSError, ValueError, ParseError) as exc:
                results.append(SubmitResult(job_id=job.job_id, error=str(exc)))
                continue
            results.append(SubmitResult(job_id=job.job_id, native_id=native_id))
        return results

    async def _launch(self, job: JobRequest) -> str:
        control = Path(job.control_dir)
        await anyio.Path(control).mkdir(parents=True, exist_ok=True)
        script = Path(job.script_path)
        await anyio.Path(script).write_text(render_wrapper(job))
        script.chmod(0o700)
        await anyio.Path(job.exit_path).unlink(missing_ok=True)
        proc = await anyio.run_process(
            ["/bin/sh", "-c", _LAUNCHER, str(script), job.stdout_path, job.stderr_path],
            cwd=job.workdir,
            start_new_session=True,
            check=False,
        )
        if proc.returncode != 0:
            raise OSError(f"could not start job: {proc.stderr.decode(errors='replace').strip()}")
        try:
            pid = int(proc.stdout.split()[0])
        except (IndexError, ValueError) as exc:
            raise ParseError(f"launcher printed {proc.stdout!r}") from exc
        stat = _proc_stat(pid)
        if stat is None:
            # it already finished; the exit file will tell
            return f"{pid}:0:0"
        return f"{pid}:{stat[1]}:{stat[2]}"

    def _alive(self, native_id: str) -> bool:
        if native_id == DONE_ID:
            return False
        pid, sid, start = parse_native_id(native_id)
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return start == 0 or stat[2] == start

    async def poll(self, active: Sequence[ActiveJob]) -> PollResult:
        now = time.time()
        found: dict[str, Observation] = {}
        for job in active:
            nid = job.native_id
            record = await _read_exit(job.request.exit_path)
            if record is not None:
                self._missing_since.pop(nid, None)
                found[nid] = Observation(
                    native_id=nid,
                    phase=_phase_of_exit(record.exit_code),
                    exit_code=record.exit_code,
                    reason=f"signal {record.signal}" if record.signal else None,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                )
            elif self._alive(nid):
                found[nid] = Observation(native_id=nid, phase=Phase.RUNNING)
            else:
                first = self._missing_since.setdefault(nid, now)
                if now - first >= self.exit_read_timeout:
                    self._missing_since.pop(nid, None)
                    found[nid] = Observation(
                        native_id=nid,
                        phase=Phase.GONE,
                        reason=f"process gone and no exit file after {self.exit_read_timeout:g}s",
                    )
        return PollResult(observations=found, foreign_jobs=None)

    async def cancel(self, native_ids: Sequence[str]) -> None:
        for nid in native_ids:
            if not self._alive(nid):
                continue
            _, sid, _ = parse_native_id(nid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, signal.SIGTERM)
            log.info("local_job_signalled", native_id=nid)

    async def hold(self, native_ids: Sequence[str]) -> None:
        raise ParseError("the local driver cannot hold a running job")

    async def release(self, native_ids: Sequence[str]) -> None:
        raise ParseError("the local driver cannot release a running job")

    async def lookup(self, jobs: Sequence[JobRequest]) -> dict[str, str]:
        """Find jobs whose launch may have happened before a crash: by exit file, then
        by a live process running their script."""
        found: dict[str, str] = {}
        wanted: dict[str, JobRequest] = {}
        for job in jobs:
            if await anyio.Path(job.exit_path).exists():
                found[job.name] = DONE_ID
            else:
                wanted[job.script_path] = job
        if not wanted:
            return found
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            for arg in argv[1:3]:
                job = wanted.get(arg.decode(errors="replace"))
                if job is not None:
                    stat = _proc_stat(int(entry))
                    if stat is not None:
                        found[job.name] = f"{entry}:{stat[1]}:{stat[2]}"
        return found

    async def check(self) -> list[CheckResult]:
        ok = os.access("/bin/sh", os.X_OK)
        return [CheckResult(name="shell", ok=ok, detail="/bin/sh" if ok else "/bin/sh missing")]

    async def aclose(self) -> None:
        return None


def _phase_of_exit(code: int) -> Phase:
    return Phase.COMPLETED if code == 0 else Phase.FAILED


async def _read_exit(path: str) -> ExitRecord | None:
    try:
        text = await anyio.Path(path).read_text()
    except OSError:
        return None
    try:
        return parse_exit_file(text)
    except ParseError:
        return None

