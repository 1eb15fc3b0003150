"""The async half of a batch driver: runs a pure :class:`Dialect` through a transport.

Polling cost is O(1) commands per head per poll, whatever the number of jobs: one queue
command, then (only for jobs that left the queue) one history command, then (only for
those history could not settle) one command that prints every exit file.

Submission writes every job's script and submits them all in ONE shell program sent
over one command's stdin; the output carries one delimited section per job. The program
is built and its output read by :mod:`schedulerd.drivers.submit_program` (pure); this
module only sends it and acts on the answers.

Longer than ~500 lines because it is one thing: the async half of every batch system,
one method per driver operation (submit, poll, cancel/hold/release, lookup, check), each
a few bounded commands whose building and reading are pure and live elsewhere (the
dialects, :mod:`~schedulerd.drivers.submit_program`, :mod:`~schedulerd.drivers.wrapper`).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import FINISHED_PHASES, JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.dialect import AdaptsToVersion, Dialect, ListsUserJobs, ProbesCapabilities
from schedulerd.drivers.submit_program import (
    PREPARE_FAILED,
    job_files,
    parse_submit_program_output,
    render_dry_run_program,
    render_submit_program,
)
from schedulerd.drivers.transport import CommandResult, Transport
from schedulerd.drivers.wrapper import parse_exit_files, read_exit_files_command
from schedulerd.errors import (
    ParseError,
    RemoteCommandError,
    SchedulerdError,
    SubmitRejected,
    TransportError,
)

log = structlog.get_logger(__name__)

#: an id that only names a job found by its exit file after a crash
UNKNOWN_PREFIX = "?"
#: how often (in polls) to count all of the user's jobs when the queue command does not
COUNT_EVERY = 10
#: longest command line sent as is (the head's shell gets it as one 128 KiB argument)
ARGV_BUDGET = 96 * 1024
#: ids per status/history command when xargs splits a long list
XARGS_IDS = 2000
ID_BATCH_MARK = "@@schedulerd-id-batch"
#: batch names we give our jobs
OUR_NAME = re.compile(r"sd-\d+-\d+\Z")


def login_relative(path: str) -> str:
    """A path on the head with ``~`` written the one way its commands understand.

    Every path reaches the head's shell quoted, so ``'~/x'`` is never expanded there:
    ``~`` and ``~/x`` name the login directory and ``x`` in it, and become ``.`` and
    ``x`` (relative paths are relative to the login directory, as with ``ssh``). Any
    other path is returned as it is.
    """
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:].lstrip("/") or "."
    return path


def resolve_on_head(path: str, login_dir: str) -> str:
    """``path`` made absolute: a relative path (or ``~/...``) is taken in ``login_dir``."""
    path = login_relative(path)
    if path.startswith("/"):
        return path
    return posixpath.normpath(posixpath.join(login_dir, path))


class BatchDriver:
    def __init__(
        self,
        dialect: Dialect,
        transport: Transport,
        *,
        user: str,
        exit_read_timeout: float = 300.0,
        command_timeout: float = 120.0,
        workdir: str = "",
        default_queue: str | None = None,
    ) -> None:
        self.dialect = dialect
        self.transport = transport
        self.user = user
        self.exit_read_timeout = exit_read_timeout
        self.command_timeout = command_timeout
        self.workdir = login_relative(workdir)
        self.default_queue = default_queue
        self.name = dialect.name
        self.version: str | None = None
        self._missing_since: dict[str, float] = {}
        self._polls = 0
        self._foreign_jobs: int | None = None
        self._login_dir: str | None = None  # where the head's commands start ($HOME)
        self._probed = False  # detect_capabilities ran (once per driver)
        self._log = log.bind(scheduler=dialect.name)

    async def _run(self, argv: Sequence[str] | str, *, input: str | None = None) -> CommandResult:
        command = argv if isinstance(argv, str) else shlex.join(argv)
        return await self.transport.run(command, input=input, timeout=self.command_timeout)

    async def _query_ids(
        self,
        build: Callable[[list[str]], list[str] | None],
        parse: Callable[[str, str, int], dict[str, Observation]],
        ids: list[str],
    ) -> dict[str, Observation] | None:
        """Run a status/history command over ``ids`` and parse it (None: no command).

        The whole command line of one SSH command reaches the head as ONE argument of
        its shell, which Linux caps at 128 KiB: about 5,000 PBS ids. Beyond the budget,
        a command that takes the ids as trailing arguments gets them on stdin through
        ``xargs`` (still one SSH command, the outputs separated by a marker line);
        any other shape is run in several commands over slices of the ids.
        """
        argv = build(ids)
        if argv is None:
            return None
        if len(shlex.join(argv)) <= ARGV_BUDGET or len(ids) < 2:
            res = await self._run(argv)
            return parse(res.stdout, res.stderr, res.exit_status)
        base = argv[: len(argv) - len(ids)]
        found: dict[str, Observation] = {}
        if argv[len(base) :] == ids and build(ids[:1]) == [*base, ids[0]]:
            script = f'{shlex.join(base)} "$@"; echo {ID_BATCH_MARK}'
            command = shlex.join(["xargs", "-n", str(XARGS_IDS), "sh", "-c", script, "sh"])
            res = await self._run(command, input="".join(f"{i}\n" for i in ids))
            for part in res.stdout.split(f"{ID_BATCH_MARK}\n"):
                if part.strip():
                    found.update(parse(part, res.stderr, res.exit_status))
            return found
        half = len(ids) // 2
        for chunk in (ids[:half], ids[half:]):
            answered = await self._query_ids(build, parse, chunk)
            found.update(answered or {})
        return found

    async def detect_version(self) -> str:
        """Ask the head which version runs; a dialect with ``for_version`` (LSF: JSON,
        delimited or wide bjobs output) adapts to it."""
        res = await self._run(self.dialect.version_argv())
        self.version = self.dialect.parse_version(res.stdout, res.stderr, res.exit_status)
        if isinstance(self.dialect, AdaptsToVersion):
            self.dialect = self.dialect.for_version(self.version)
        self._log.info("head_version", version=self.version)
        return self.version

    async def detect_capabilities(self) -> str | None:
        """Heads of one batch system differ in what their commands accept (a
        Torque-compatible ``qstat`` without ``-x``). A dialect with ``probe_argv`` says,
        given the version found, whether a question is needed; ``for_probe`` reads the
        answer and returns the dialect for this head. Asked once per driver (the first
        command sent, or ``clusters check``). None: nothing to adapt."""
        prober = self.dialect if isinstance(self.dialect, ProbesCapabilities) else None
        argv = None if prober is None else prober.probe_argv(self.version)
        if prober is None or argv is None:
            self._probed = True
            return None if prober is None else f"known from the version ({self.version})"
        res = await self._run(argv)
        dialect, detail = prober.for_probe(res.stdout, res.stderr, res.exit_status)
        self.dialect, self._probed = dialect, True
        self._log.info("head_capabilities", detail=detail)
        return str(detail)

    async def _ensure_version(self) -> None:
        if self.version is None:
            try:
                await self.detect_version()
            except (ParseError, RemoteCommandError) as exc:
                if isinstance(exc, RemoteCommandError) and exc.transient:
                    raise TransportError(f"version check: {exc.message}") from exc
                self.version = "unknown"
                self._log.warning("head_version_unknown", error=exc.message)
        if not self._probed:
            try:
                await self.detect_capabilities()
            except (ParseError, RemoteCommandError) as exc:
                if isinstance(exc, RemoteCommandError) and exc.transient:
                    raise TransportError(f"capability check: {exc.message}") from exc
                self._probed = True
                self._log.warning("head_capabilities_unknown", error=exc.message)

    # --- submit ---------------------------------------------------------------------------

    async def login_dir(self) -> str:
        """The directory the head's commands start in (the login directory): asked once."""
        if self._login_dir is None:
            res = await self._run("pwd")
            home = res.stdout.strip()
            if res.exit_status != 0 or not home.startswith("/") or "\n" in home:
                raise TransportError(
                    f"cannot tell the login directory: pwd printed {res.stdout[:100]!r}"
                    f" {res.stderr.strip()[:200]!r} (exit {res.exit_status})"
                )
            self._login_dir = home
        return self._login_dir

    async def _absolute(self, jobs: Sequence[JobRequest]) -> Sequence[JobRequest]:
        """Jobs whose workdir is relative (to the login directory) with it made absolute:
        the scripts and the submit commands run elsewhere (the batch system's starting
        directory, the job's own workdir), where a relative path means something else."""
        if all(job.workdir.startswith("/") for job in jobs):
            return jobs
        home = await self.login_dir()
        return [job if job.workdir.startswith("/")
                else dataclasses.replace(job, workdir=resolve_on_head(job.workdir, home))
                for job in jobs]  # fmt: skip

    async def submit(self, jobs: Sequence[JobRequest]) -> list[SubmitResult]:
        if not jobs:
            return []
        await self._ensure_version()
        jobs = await self._absolute(jobs)
        results: dict[int, SubmitResult] = {}
        renderable: list[JobRequest] = []
        rendered: list[dict[str, str]] = []  # each job's files, rendered once
        for job in jobs:
            try:
                rendered.append(job_files(self.dialect, job))
                renderable.append(job)
            except ValueError as exc:
                results[job.job_id] = SubmitResult(job_id=job.job_id, error=f"invalid job: {exc}")
        if renderable:
            program = render_submit_program(self.dialect, renderable, rendered)
            res = await self._run(["sh", "-s"], input=program)
            sections = parse_submit_program_output(res.stdout, len(renderable))
            if len(sections) != len(renderable):
                # cut off mid-way: some may be on the head; the caller reconciles by name
                raise TransportError(
                    f"submit output incomplete ({len(sections)} of {len(renderable)} answers;"
                    f" exit {res.exit_status}): {res.stderr.strip()[:300]}"
                )
            unparsed: list[JobRequest] = []
            maybe_queued: list[JobRequest] = []
            for n, job in enumerate(renderable):
                status, out, err = sections[n]
                if status == PREPARE_FAILED and err.startswith("cannot prepare "):
                    # its directory or script could not be made on the head: this job only
                    results[job.job_id] = SubmitResult(job_id=job.job_id, error=err[:500])
                    continue
                try:
                    native = self.dialect.parse_submit(out, err, status)
                except (SubmitRejected, RemoteCommandError) as exc:
                    results[job.job_id] = SubmitResult(
                        job_id=job.job_id, error=exc.message, transient=exc.transient, auth=exc.auth
                    )
                    if exc.transient:
                        # a passing refusal may be a request the server took but did not
                        # answer in time (Slurm "Socket timed out", PBS "End of File"):
                        # look the name up before it is offered again (invariant 2)
                        maybe_queued.append(job)
                except ParseError as exc:
                    self._log.warning(
                        "submit_output_unparsed", job_id=job.job_id, error=exc.message
                    )
                    unparsed.append(job)
                else:
                    results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=native)
            if maybe_queued or unparsed:
                # it may or may not be queued: ask the head rather than guess (one command)
                found = await self.lookup([*maybe_queued, *unparsed])
                for job in maybe_queued:
                    queued = found.get(job.name)
                    if queued is not None:
                        self._log.info(
                            "refused_submit_found_queued", job_id=job.job_id, native_id=queued
                        )
                        results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=queued)
            if unparsed:
                for job in unparsed:
                    queued = found.get(job.name)
                    if queued is not None:
                        results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=queued)
                    else:
                        results[job.job_id] = SubmitResult(
                            job_id=job.job_id, error="submit output not understood", transient=True
                        )
        return [results[job.job_id] for job in jobs]

    # --- poll -------------------------------------------------------------------------------

    async def poll(self, active: Sequence[ActiveJob]) -> PollResult:
        await self._ensure_version()
        self._polls += 1
        known = [a for a in active if not a.native_id.startswith(UNKNOWN_PREFIX)]
        queue = (
            await self._query_ids(
                lambda ids: self.dialect.status_argv(self.user, ids),
                self.dialect.parse_status,
                [a.native_id for a in known],
            )
            or {}
        )
        ours = {a.native_id for a in active}
        if self._lists_all_user_jobs():
            self._foreign_jobs = sum(
                1
                for native, o in queue.items()
                if o.phase not in FINISHED_PHASES
                and native not in ours
                and not (o.name and OUR_NAME.match(o.name))
            )
        elif self._polls % COUNT_EVERY == 1:
            await self._count_foreign_jobs(ours)
        found: dict[str, Observation] = {}
        left: list[ActiveJob] = []
        for job in active:
            obs = queue.get(job.native_id)
            if obs is None:
                left.append(job)
            else:
                self._missing_since.pop(job.native_id, None)
                found[job.native_id] = obs
        if left:
            await self._settle_departed(left, found)
        return PollResult(observations=found, foreign_jobs=self._foreign_jobs)

    def _lists_all_user_jobs(self) -> bool:
        return not isinstance(self.dialect, ListsUserJobs)

    async def _count_foreign_jobs(self, ours: set[str]) -> None:
        """Systems whose queue command lists only our ids: count the rest with a
        listing of all the user's job ids (our jobs being submitted right now count as
        foreign until their ids are known, which errs on the safe side)."""
        lister = self.dialect
        if not isinstance(lister, ListsUserJobs):
            return
        try:
            res = await self._run(lister.list_user_argv(self.user))
            ids = lister.parse_list_user(res.stdout, res.stderr, res.exit_status)
        except (ParseError, RemoteCommandError) as exc:
            self._log.warning("count_user_jobs_failed", error=exc.message)
            return
        self._foreign_jobs = len([i for i in ids if i not in ours])

    async def _settle_departed(self, left: list[ActiveJob], found: dict[str, Observation]) -> None:
        """History for jobs that left the queue, then their exit files, then the timeout."""
        now = time.time()
        history: dict[str, Observation] = {}
        real = [a for a in left if not a.native_id.startswith(UNKNOWN_PREFIX)]
        if real:
            since = min(a.submitted_at for a in real) - 3600
            try:
                history = (
                    await self._query_ids(
                        lambda ids: self.dialect.history_argv(self.user, ids, since),
                        self.dialect.parse_history,
                        [a.native_id for a in real],
                    )
                    or {}
                )
            except RemoteCommandError as exc:
                if exc.transient:
                    raise TransportError(f"history: {exc.message}") from exc
                if exc.auth:
                    raise  # our credentials: the poll fails and the cluster is degraded at once
                self._log.warning("history_unavailable", error=exc.message)
            except ParseError as exc:
                self._log.warning("history_unparsed", error=exc.message)
        unsettled: list[ActiveJob] = []
        for job in left:
            obs = history.get(job.native_id)
            if obs is not None and obs.phase in FINISHED_PHASES:
                self._missing_since.pop(job.native_id, None)
                found[job.native_id] = obs
            elif obs is not None and obs.phase is not Phase.GONE:
                # history still sees it queued/running (the queue and history raced)
                found[job.native_id] = obs
            else:
                unsettled.append(job)
        if not unsettled:
            return
        command, paths = read_exit_files_command([a.request.exit_path for a in unsettled])
        res = await self._run(command, input=paths)
        records = parse_exit_files(res.stdout)
        for job in unsettled:
            record = records.get(job.request.exit_path)
            if record is not None:
                self._missing_since.pop(job.native_id, None)
                found[job.native_id] = Observation(
                    native_id=job.native_id,
                    phase=Phase.COMPLETED if record.exit_code == 0 else Phase.FAILED,
                    exit_code=record.exit_code,
                    reason="exit file" + (f" (signal {record.signal})" if record.signal else ""),
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                )
                continue
            first = self._missing_since.setdefault(job.native_id, now)
            if now - first >= self.exit_read_timeout:
                self._missing_since.pop(job.native_id, None)
                found[job.native_id] = Observation(
                    native_id=job.native_id,
                    phase=Phase.GONE,
                    reason=f"left the queue; no history and no exit file after {self.exit_read_timeout:g}s",
                )

    # --- cancel / hold / release ------------------------------------------------------------

    async def cancel(self, native_ids: Sequence[str]) -> None:
        ids = [n for n in native_ids if not n.startswith(UNKNOWN_PREFIX)]
        if ids:
            res = await self._run(self.dialect.cancel_argv(ids))
            self.dialect.parse_cancel(res.stdout, res.stderr, res.exit_status)

    async def hold(self, native_ids: Sequence[str]) -> None:
        res = await self._run(self.dialect.hold_argv(list(native_ids)))
        self.dialect.parse_cancel(res.stdout, res.stderr, res.exit_status)

    async def release(self, native_ids: Sequence[str]) -> None:
        res = await self._run(self.dialect.release_argv(list(native_ids)))
        self.dialect.parse_cancel(res.stdout, res.stderr, res.exit_status)

    # --- crash reconciliation ---------------------------------------------------------------

    async def lookup(self, jobs: Sequence[JobRequest]) -> dict[str, str]:
        """Which of these batch names reached the head: by the queue listing, then by
        exit file (a job that already ran and left)."""
        if not jobs:
            return {}
        ids: list[str] = []
        lister = self.dialect
        if isinstance(lister, ListsUserJobs):
            res = await self._run(lister.list_user_argv(self.user))
            ids = list(lister.parse_list_user(res.stdout, res.stderr, res.exit_status))
            if not ids:
                queue: dict[str, Observation] = {}
            else:
                queue = (
                    await self._query_ids(
                        lambda chunk: self.dialect.status_argv(self.user, chunk),
                        self.dialect.parse_status,
                        ids,
                    )
                    or {}
                )
        else:
            res = await self._run(self.dialect.status_argv(self.user, []))
            queue = self.dialect.parse_status(res.stdout, res.stderr, res.exit_status)
        by_name = {o.name: native for native, o in queue.items() if o.name}
        found = {job.name: by_name[job.name] for job in jobs if job.name in by_name}
        rest = [job for job in jobs if job.name not in found]
        if rest:
            command, paths = read_exit_files_command([j.exit_path for j in rest])
            res = await self._run(command, input=paths)
            records = parse_exit_files(res.stdout)
            for job in rest:
                if job.exit_path in records:
                    found[job.name] = UNKNOWN_PREFIX + job.name
        return found

    # --- clusters check -----------------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        checks: list[CheckResult] = []

        async def step(name: str, coro: Any) -> bool:
            try:
                detail = await coro
            except SchedulerdError as exc:
                checks.append(CheckResult(name=name, ok=False, detail=exc.message))
                return False
            checks.append(CheckResult(name=name, ok=True, detail=str(detail)))
            return True

        async def connect() -> str:
            res = await self._run("echo schedulerd-check")
            if "schedulerd-check" not in res.stdout:
                raise RemoteCommandError(
                    f"unexpected answer {res.stdout[:100]!r} {res.stderr[:200]!r}"
                )
            return "connected"

        if not await step("connect", connect()):
            return checks

        async def commands() -> str:
            probe = JobRequest(
                job_id=0, attempt=0, name="sd-check-0", argv=("true",), workdir=self.workdir or "."
            )
            names = sorted({self.dialect.submit_argv(probe)[0], self.dialect.status_argv(self.user, ["1"])[0],
                            self.dialect.cancel_argv(["1"])[0]} - {"sh"})  # fmt: skip
            res = await self._run("for c in " + " ".join(map(shlex.quote, names)) +
                                  '; do command -v "$c" >/dev/null || echo "missing $c"; done')  # fmt: skip
            missing = [
                line.split(" ", 1)[1]
                for line in res.stdout.splitlines()
                if line.startswith("missing ")
            ]
            if missing:
                raise RemoteCommandError(f"not on PATH: {', '.join(missing)}")
            return ", ".join(names)

        await step("commands", commands())

        async def version() -> str:
            # an unknown version is a warning, not a failure: nothing depends on it
            # unless the dialect adapts to it (for_version), and such a dialect keeps
            # its default when it cannot tell
            try:
                return await self.detect_version()
            except (ParseError, RemoteCommandError) as exc:
                if isinstance(exc, RemoteCommandError) and exc.transient:
                    raise
                if self.version is None:
                    self.version = "unknown"
                return f"warning: version unknown ({exc.message[:200]})"

        await step("version", version())
        if isinstance(self.dialect, ProbesCapabilities):
            await step("status format", self.detect_capabilities())

        async def status() -> str:
            res = await self._run(self.dialect.status_argv(self.user, []))
            jobs = self.dialect.parse_status(res.stdout, res.stderr, res.exit_status)
            return f"queue answers ({len(jobs)} jobs listed)"

        await step("queue", status())

        async def workdir() -> str:
            if not self.workdir:
                raise RemoteCommandError("no workdir configured")
            q = shlex.quote(self.workdir)
            res = await self._run(f"mkdir -p -- {q} && test -w {q} && echo ok")
            if res.stdout.strip() != "ok":
                raise RemoteCommandError(
                    f"{self.workdir} is not writable: {res.stderr.strip()[:200]}"
                )
            return f"{self.workdir} writable"

        workdir_ok = await step("workdir", workdir())
        if self.dialect.has_dry_run and workdir_ok:

            async def dry_run() -> str:
                probe = JobRequest(job_id=0, attempt=0, name="sd-check-0", argv=("true",),
                                   workdir=f"{self.workdir}/.check", queue=self.default_queue)  # fmt: skip
                argv = self.dialect.dry_run_argv(probe)
                assert argv is not None
                program = render_dry_run_program(self.dialect, probe, argv)
                res = await self._run(["sh", "-s"], input=program)
                if res.exit_status != 0:
                    raise RemoteCommandError(
                        f"dry-run submit refused: {(res.stderr or res.stdout).strip()[:300]}"
                    )
                return "dry-run submit accepted"

            await step("dry-run", dry_run())
        return checks

    async def aclose(self) -> None:
        await self.transport.aclose()
