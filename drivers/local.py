"""The ``local`` driver: jobs run as detached processes on this machine.

Each job runs the same generated wrapper script the batch drivers submit, in a session
of its own, so that the daemon can stop, crash or restart without touching it
(invariant 3). The native id is ``<wrapper pid>:<process group>:<start time in ticks>``;
the start time guards against a recycled pid. The exit file decides how a job ended.

Walltime (``walltime_s``) is enforced by a supervisor that is detached like the job,
not by the daemon: see :func:`_supervise`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import ExitRecord, JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.transport import LocalTransport, make_private_dirs
from schedulerd.drivers.wrapper import parse_exit_file, render_wrapper
from schedulerd.errors import ParseError

log = structlog.get_logger(__name__)

# The launcher is a session leader (start_new_session); it starts the wrapper in the
# background, prints its pid and exits at once, so the job is never our child.
_LAUNCHER = 'sh "$0" </dev/null >>"$1" 2>>"$2" & echo $!'
DONE_ID = "done"  # native id of a job found finished after a crash (its exit file decides)
#: seconds between the TERM a job gets at its walltime and the KILL that follows if it (or
#: anything else in its process group) is still there
WALLTIME_GRACE = 10.0


def walltime_marker_path(job: JobRequest) -> str:
    """Written by the supervisor just before it signals a job at its walltime: an exit
    file next to it means the job was ended for its walltime (``timeout``)."""
    return f"{job.control_dir}/{job.name}.walltime"


def _supervise(argv: list[str]) -> None:
    """The walltime supervisor of a job with ``walltime_s``: the launcher of such a job,
    and then the parent of its wrapper for as long as the wrapper lives. It runs in a
    fresh ``python -I -S`` (this function's source is passed with ``-c``, so it needs
    nothing but the standard library and works whatever the job's environment).

    Why here and not in the daemon's poll loop: a local job is detached from the daemon
    and must not depend on it (invariant 3). Enforcing the walltime from the poll loop
    would let a job overrun for as long as the daemon is stopped or restarting; the
    supervisor keeps the limit whatever the daemon does. Why not in the shell wrapper:
    the wrapper is shared with the batch drivers (whose batch system enforces the
    walltime), is killed with the job by the final KILL, and POSIX ``sh`` cannot wait for
    "a child or a timer" without leaving stray processes.

    argv: script, stdout, stderr, exit file, walltime marker, walltime seconds, grace seconds.

    The launcher (this process, a session leader) forks the supervisor, which starts the
    wrapper in a session and process group of its own, reports its pid through a pipe and
    the launcher prints it and exits. The supervisor waits for the wrapper (it is its
    parent: the pid cannot be recycled under it). At the walltime it writes the marker,
    sends TERM to the job's process group, and KILL after the grace period to whatever
    of the group is left; when the wrapper did not write the exit file (KILLed), it
    writes it itself. Everything it prints goes to the job's stderr.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    script, out_path, err_path, exit_path, marker_path = argv[:5]
    walltime, grace = float(argv[5]), float(argv[6])
    control_dir = os.path.dirname(exit_path)

    def write_atomically(path: str, text: str) -> None:
        tmp = os.path.join(control_dir, f".tmp.{os.getpid()}.{os.path.basename(path)}")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def wrapper_ended_by(pid: int, deadline: float) -> bool:
        """Has the wrapper exited before ``deadline`` (monotonic)? It is left unreaped,
        so its pid (and process group id) stays ours until we reap it."""
        while True:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            if os.waitid(os.P_PID, pid, flags) is not None:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            signal.sigtimedwait([signal.SIGCHLD], left)

    def group_has_live_members(pgid: int) -> bool:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False

    reader, writer = os.pipe()
    if os.fork() > 0:
        # the launcher: print what the supervisor reports (the job's pid), then leave
        os.close(writer)
        report = b""
        while chunk := os.read(reader, 4096):
            report += chunk
        text = report.decode(errors="replace")
        if text.startswith("pid "):
            sys.stdout.write(text[4:])
            sys.stdout.flush()
            os._exit(0)
        sys.stderr.write(text or "the walltime supervisor died before starting the job\n")
        sys.stderr.flush()
        os._exit(1)
    os.close(reader)
    try:
        with open(os.devnull, "rb") as null, open(out_path, "ab") as out, \
                open(err_path, "ab") as err:  # fmt: skip
            # off the launcher's pipes (the daemon reads them to their end)
            os.dup2(null.fileno(), 0)
            os.dup2(null.fileno(), 1)
            os.dup2(err.fileno(), 2)
            job = subprocess.Popen(
                ["/bin/sh", script], stdin=null, stdout=out, stderr=err, start_new_session=True
            )
    except (OSError, subprocess.SubprocessError) as exc:
        os.write(writer, f"could not start job: {exc}\n".encode())
        os._exit(1)
    pid = job.pid
    # SIGCHLD is blocked only now, so the wrapper did not inherit the mask; it stays
    # pending for sigtimedwait, and a wrapper that already ended is seen by waitid
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    started = time.time()
    os.write(writer, f"pid {pid}\n".encode())
    os.close(writer)

    if not wrapper_ended_by(pid, time.monotonic() + walltime) and not os.path.exists(exit_path):
        write_atomically(marker_path, f"walltime={walltime:g}\nterm_at={time.time():.3f}\n")
        sys.stderr.write(
            f"schedulerd: walltime of {walltime:g}s exceeded: sending TERM (KILL in {grace:g}s)\n"
        )
        sys.stderr.flush()
        os.killpg(pid, signal.SIGTERM)
        grace_end = time.monotonic() + grace
        if wrapper_ended_by(pid, grace_end) and group_has_live_members(pid):
            # the wrapper is gone but something it started ignores TERM
            time.sleep(max(0.0, grace_end - time.monotonic()))
        if group_has_live_members(pid):
            sys.stderr.write(f"schedulerd: still running {grace:g}s after TERM: sending KILL\n")
            sys.stderr.flush()
            # the wrapper is unreaped at worst, so the group id cannot have been recycled
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _, status = os.waitpid(pid, 0)
    if not os.path.exists(exit_path):
        # the wrapper was killed before it could record anything (KILL): say how it ended
        code = os.waitstatus_to_exitcode(status)
        sig = signal.Signals(-code).name[3:] if code < 0 else ""
        write_atomically(
            exit_path,
            f"exit_code={128 - code if code < 0 else code}\nstarted={int(started)}\n"
            f"finished={int(time.time())}\nsignal={sig}\n",
        )
    os._exit(0)


# ``python -I -S -c`` runs this: isolated from the environment and the installed packages
_SUPERVISOR_SOURCE = (
    "from __future__ import annotations\n"
    + inspect.getsource(_supervise)
    + "\nimport sys\n_supervise(sys.argv[1:])\n"
)


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

    def __init__(
        self, *, exit_read_timeout: float = 30.0, walltime_grace: float = WALLTIME_GRACE
    ) -> None:
        self.exit_read_timeout = exit_read_timeout
        self.walltime_grace = walltime_grace
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
        # the job's folders are its owner's only (0700), like the batch drivers' on a head
        await anyio.to_thread.run_sync(make_private_dirs, str(control))
        script = Path(job.script_path)
        await anyio.Path(script).write_text(render_wrapper(job))
        await anyio.Path(script).chmod(0o700)
        await anyio.Path(job.exit_path).unlink(missing_ok=True)
        marker = walltime_marker_path(job)
        await anyio.Path(marker).unlink(missing_ok=True)
        if job.walltime_s:
            argv = [
                sys.executable or "python3", "-I", "-S", "-c", _SUPERVISOR_SOURCE,
                str(script), job.stdout_path, job.stderr_path, job.exit_path, marker,
                str(job.walltime_s), f"{self.walltime_grace:g}",
            ]  # fmt: skip
        else:
            argv = ["/bin/sh", "-c", _LAUNCHER, str(script), job.stdout_path, job.stderr_path]
        proc = await anyio.run_process(
            argv,
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
        pid, _sid, start = parse_native_id(native_id)
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
                phase = _phase_of_exit(record.exit_code)
                reason = f"signal {record.signal}" if record.signal else None
                if await anyio.Path(walltime_marker_path(job.request)).exists():
                    phase = Phase.TIMEOUT
                    reason = f"walltime of {job.request.walltime_s}s exceeded" + (
                        f" (signal {record.signal})" if record.signal else ""
                    )
                found[nid] = Observation(
                    native_id=nid,
                    phase=phase,
                    exit_code=record.exit_code,
                    reason=reason,
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
                # /proc is in memory: reading a process's cmdline never waits on a disk
                with open(f"/proc/{entry}/cmdline", "rb") as fh:  # noqa: ASYNC230
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            for arg in argv[1:3]:
                match = wanted.get(arg.decode(errors="replace"))
                if match is not None:
                    stat = _proc_stat(int(entry))
                    if stat is not None:
                        found[match.name] = f"{entry}:{stat[1]}:{stat[2]}"
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
