"""The async half of a batch driver: runs a pure :class:`Dialect` through a transport.

Polling cost is O(1) commands per head per poll, whatever the number of jobs: one queue
command, then (only for jobs that left the queue) one history command, then (only for
those history could not settle) one command that prints every exit file.

Submission writes every job's script and submits them all in ONE shell program sent
over one command's stdin; the output carries one delimited section per job.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from schedulerd.drivers.api import ActiveJob, CheckResult, PollResult
from schedulerd.drivers.base import FINISHED_PHASES, JobRequest, Observation, Phase, SubmitResult
from schedulerd.drivers.dialect import Dialect
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

SUBMIT_MARK = "@@schedulerd-submit"
#: the submit program's status for a job whose directory or script could not be made
PREPARE_FAILED = 98
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


def job_files(dialect: Dialect, job: JobRequest) -> dict[str, str]:
    """Every file a job's submit writes (path -> content): its script, then the dialect's
    extra files. Raises ValueError for a job the dialect cannot render."""
    return {job.script_path: dialect.render_script(job), **dialect.extra_files(job)}


def render_submit_program(
    dialect: Dialect, jobs: Sequence[JobRequest], files: Sequence[dict[str, str]] | None = None
) -> str:
    """One ``sh`` program that writes every job's files and submits each job.

    ``files``: each job's :func:`job_files` where the caller rendered them already.

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
        '__sd_home=$(pwd)',
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
        lines.append('while IFS= read -r __sd_l || [ -n "$__sd_l" ]; do printf \'%s\\n\' "$__sd_l"; done < "$__sd_e"')
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
            if status is None and len(words) == 3 and words[0] == SUBMIT_MARK and words[1] == str(index):
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
        if argv[len(base):] == ids and build(ids[:1]) == [*base, ids[0]]:
            script = f'{shlex.join(base)} "$@"; echo {ID_BATCH_MARK}'
            command = shlex.join(["xargs", "-n", str(XARGS_IDS), "sh", "-c", script, "sh"])
            res = await self._run(command, input="".join(f"{i}\n" for i in ids))
            for part in res.stdout.split(f"{ID_BATCH_MARK}\n"):
                if part.strip():
                    found.update(parse(part, res.stderr, res.exit_status))
            return found
        half = len(ids) // 2
        for chunk in (ids[:half], ids[half:]):
            part = await self._query_ids(build, parse, chunk)
            found.update(part or {})
        return found

    async def detect_version(self) -> str:
        """Ask the head which version runs; a dialect with ``for_version`` (LSF: JSON,
        delimited or wide bjobs output) adapts to it."""
        res = await self._run(self.dialect.version_argv())
        self.version = self.dialect.parse_version(res.stdout, res.stderr, res.exit_status)
        adapt = getattr(self.dialect, "for_version", None)
        if adapt is not None:
            self.dialect = adapt(self.version)
        self._log.info("head_version", version=self.version)
        return self.version

    async def detect_capabilities(self) -> str | None:
        """Heads of one batch system differ in what their commands accept (a
        Torque-compatible ``qstat`` without ``-x``). A dialect with ``probe_argv`` says,
        given the version found, whether a question is needed; ``for_probe`` reads the
        answer and returns the dialect for this head. Asked once per driver (the first
        command sent, or ``clusters check``). None: nothing to adapt."""
        probe = getattr(self.dialect, "probe_argv", None)
        argv = None if probe is None else probe(self.version)
        if argv is None:
            self._probed = True
            return None if probe is None else f"known from the version ({self.version})"
        res = await self._run(argv)
        adapt = self.dialect.for_probe  # type: ignore[attr-defined]
        dialect, detail = adapt(res.stdout, res.stderr, res.exit_status)
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
                    self._log.warning("submit_output_unparsed", job_id=job.job_id, error=exc.message)
                    unparsed.append(job)
                else:
                    results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=native)
            if maybe_queued or unparsed:
                # it may or may not be queued: ask the head rather than guess (one command)
                found = await self.lookup([*maybe_queued, *unparsed])
                for job in maybe_queued:
                    native = found.get(job.name)
                    if native is not None:
                        self._log.info("refused_submit_found_queued", job_id=job.job_id, native_id=native)
                        results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=native)
            if unparsed:
                for job in unparsed:
                    native = found.get(job.name)
                    if native is not None:
                        results[job.job_id] = SubmitResult(job_id=job.job_id, native_id=native)
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
        queue = await self._query_ids(
            lambda ids: self.dialect.status_argv(self.user, ids),
            self.dialect.parse_status,
            [a.native_id for a in known],
        ) or {}
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
        return getattr(self.dialect, "status_lists_user_jobs", True) is True

    async def _count_foreign_jobs(self, ours: set[str]) -> None:
        """Systems whose queue command lists only our ids: count the rest with a
        listing of all the user's job ids (our jobs being submitted right now count as
        foreign until their ids are known, which errs on the safe side)."""
        argv_fn = getattr(self.dialect, "list_user_argv", None)
        if argv_fn is None:
            return
        try:
            res = await self._run(argv_fn(self.user))
            ids = self.dialect.parse_list_user(res.stdout, res.stderr, res.exit_status)  # type: ignore[attr-defined]
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
                history = await self._query_ids(
                    lambda ids: self.dialect.history_argv(self.user, ids, since),
                    self.dialect.parse_history,
                    [a.native_id for a in real],
                ) or {}
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
        argv_fn = getattr(self.dialect, "list_user_argv", None)
        if not self._lists_all_user_jobs() and argv_fn is not None:
            res = await self._run(argv_fn(self.user))
            ids = list(self.dialect.parse_list_user(res.stdout, res.stderr, res.exit_status))  # type: ignore[attr-defined]
            if not ids:
                queue: dict[str, Observation] = {}
            else:
                queue = await self._query_ids(
                    lambda chunk: self.dialect.status_argv(self.user, chunk),
                    self.dialect.parse_status,
                    ids,
                ) or {}
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
                raise RemoteCommandError(f"unexpected answer {res.stdout[:100]!r} {res.stderr[:200]!r}")
            return "connected"

        if not await step("connect", connect()):
            return checks

        async def commands() -> str:
            probe = JobRequest(job_id=0, attempt=0, name="sd-check-0", argv=("true",), workdir=self.workdir or ".")
            names = sorted({self.dialect.submit_argv(probe)[0], self.dialect.status_argv(self.user, ["1"])[0],
                            self.dialect.cancel_argv(["1"])[0]} - {"sh"})  # fmt: skip
            res = await self._run("for c in " + " ".join(map(shlex.quote, names)) +
                                  '; do command -v "$c" >/dev/null || echo "missing $c"; done')  # fmt: skip
            missing = [line.split(" ", 1)[1] for line in res.stdout.splitlines() if line.startswith("missing ")]
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
        if hasattr(self.dialect, "probe_argv"):
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
                raise RemoteCommandError(f"{self.workdir} is not writable: {res.stderr.strip()[:200]}")
            return f"{self.workdir} writable"

        workdir_ok = await step("workdir", workdir())
        if self.dialect.has_dry_run and workdir_ok:

            async def dry_run() -> str:
                probe = JobRequest(job_id=0, attempt=0, name="sd-check-0", argv=("true",),
                                   workdir=f"{self.workdir}/.check", queue=self.default_queue)  # fmt: skip
                argv = self.dialect.dry_run_argv(probe)
                assert argv is not None
                files = job_files(self.dialect, probe)
                program = [f"mkdir -p -- {shlex.quote(probe.control_dir)}"]
                for path, content in files.items():
                    delimiter = _delimiter(content)
                    program += [f"cat > {shlex.quote(path)} <<'{delimiter}'", content.rstrip("\n"), delimiter]
                program.append(f"cd -- {shlex.quote(probe.workdir)} && {shlex.join(argv)}")
                res = await self._run(["sh", "-s"], input="\n".join(program) + "\n")
                if res.exit_status != 0:
                    raise RemoteCommandError(
                        f"dry-run submit refused: {(res.stderr or res.stdout).strip()[:300]}"
                    )
                return "dry-run submit accepted"

            await step("dry-run", dry_run())
        return checks

    async def aclose(self) -> None:
        await self.transport.aclose()
