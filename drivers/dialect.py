"""The pure half of a batch-system driver: argv builders and output parsers.

Each batch system has one module (``pbspro``, ``torque``, ``lsf``, ``htcondor``,
``slurm``) exporting a class that satisfies :class:`Dialect`. Nothing here does I/O;
``schedulerd.drivers.batch.BatchDriver`` runs the argv lists through a transport and
hands the outputs back to the parsers. Parsers raise only
:class:`schedulerd.errors.ParseError` (or, for a head that answered with an error,
:class:`schedulerd.errors.RemoteCommandError` with ``transient`` set when retrying later
may help) -- never ``KeyError``/``ValueError``/``IndexError``.

Every argv is a list of words; the driver joins it with ``shlex.join`` (invariant 6).

Optional capabilities are small protocols of their own (:class:`AdaptsToVersion`,
:class:`ProbesCapabilities`, :class:`ListsUserJobs`): a dialect has one by defining its
methods, and the driver asks ``isinstance(dialect, ...)`` (they are runtime-checkable),
never ``getattr``. What a job may ask for is checked by each dialect module's
module-level ``validate_job`` (called by ``schedulerd.jobspec`` at accept time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from schedulerd.drivers.base import JobRequest, Observation


class Dialect(Protocol):
    """What a batch system looks like to the driver."""

    #: the ``scheduler`` value in cluster config: pbspro | torque | lsf | htcondor | slurm
    name: str
    #: whether ``dry_run_argv`` is supported (``clusters check`` does a dry-run submit)
    has_dry_run: bool

    def render_script(self, job: JobRequest) -> str:
        """The complete job script (or submit description) for ``job``.

        Directives from queue/cpus/memory/walltime/account/extra directives, job name
        ``job.name``, stdout/stderr paths, scheduler auto-requeue off unless
        ``job.requeue``, and the wrapper from ``schedulerd.drivers.wrapper`` that writes
        the exit file. The script is stored at ``job.script_path`` on the head.
        """
        ...

    def extra_files(self, job: JobRequest) -> dict[str, str]:
        """Files to write on the head besides the script (path -> content), e.g. the
        HTCondor submit description. ``{}`` for most systems."""
        ...

    def submit_argv(self, job: JobRequest) -> list[str]:
        """The command that submits the script already written at ``job.script_path``.

        It runs with the job's workdir as current directory.
        """
        ...

    def parse_submit(self, stdout: str, stderr: str, exit_status: int) -> str:
        """The native id from a submit command's output.

        Raises ``SubmitRejected(transient=...)`` when the system refused the job
        (transient: a limit was hit, the server could not be reached; permanent: unknown
        queue, invalid account, ...), ``ParseError`` when the output is not understood.
        """
        ...

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        """ONE queue command listing this user's jobs (at least those in ``native_ids``)."""
        ...

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        """Every job the queue command listed, keyed by native id, with ``name`` set.

        Jobs absent from the result have left the queue. "Unknown job" complaints on
        stderr about some ids are not an error. A head that cannot answer at all raises
        ``RemoteCommandError(transient=True)``.
        """
        ...

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        """ONE history/accounting command for jobs that left the queue (``since``: epoch
        seconds, the earliest submit time among them), or ``None`` when the system keeps
        no history we can ask."""
        ...

    def parse_history(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        """Final (or current) observations from the history command, keyed by native id."""
        ...

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        """ONE command that cancels all ``native_ids``."""
        ...

    def parse_cancel(self, stdout: str, stderr: str, exit_status: int) -> None:
        """Accept "already finished"/"unknown job" complaints; raise RemoteCommandError
        for anything else (permission denied, server down: transient)."""
        ...

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        """ONE command that holds all ``native_ids``."""
        ...

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        """ONE command that releases all ``native_ids``."""
        ...

    def version_argv(self) -> list[str]:
        """A command that prints the batch system's version."""
        ...

    def parse_version(self, stdout: str, stderr: str, exit_status: int) -> str:
        """A short version/dialect string, e.g. ``"OpenPBS 22.05"``."""
        ...

    def dry_run_argv(self, job: JobRequest) -> list[str] | None:
        """A submit that checks without queueing (sbatch --test-only, ...), or None."""
        ...


@runtime_checkable
class AdaptsToVersion(Protocol):
    """A dialect whose commands depend on the version the head reports (LSF: JSON,
    delimited or wide ``bjobs`` output)."""

    def for_version(self, version: str) -> Dialect:
        """The dialect for a head that answered ``version`` (``parse_version``'s string)."""
        ...


@runtime_checkable
class ProbesCapabilities(Protocol):
    """A dialect that must ask the head what its commands accept (a Torque-compatible
    ``qstat`` without ``-x``). Asked once per driver, after the version."""

    def probe_argv(self, version: str | None) -> list[str] | None:
        """The question for a head of this ``version``, or None when the version tells."""
        ...

    def for_probe(self, stdout: str, stderr: str, exit_status: int) -> tuple[Dialect, str]:
        """The dialect for this head from the probe's answer, and a line for ``clusters
        check``."""
        ...


@runtime_checkable
class ListsUserJobs(Protocol):
    """A dialect whose status command lists only the ids it is given (PBS Pro, Torque):
    it lists all of the user's job ids apart, to count foreign jobs and to find ours
    again by name after a crash. Dialects without it list every job of the user in the
    status command itself."""

    def list_user_argv(self, user: str) -> list[str]:
        """ONE command that prints the ids of all of ``user``'s jobs."""
        ...

    def parse_list_user(self, stdout: str, stderr: str, exit_status: int) -> list[str]:
        """The ids that command printed."""
        ...


def problems_or_render_error(problems: list[str], render: Callable[[], object]) -> list[str]:
    """What a dialect module's ``validate_job`` answers: the ``problems`` its own checks
    found; else the message of the ValueError that rendering the job raises (``render``:
    the dialect's directives or submit description); else ``[]``, the job can be taken."""
    if problems:
        return problems
    try:
        render()
    except ValueError as exc:
        return [str(exc)]
    return []
