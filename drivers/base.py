"""Values shared by every driver: what a driver is asked to submit, what it observes.

Pure data, no I/O. A batch system is described by a *dialect* module (``pbspro``,
``torque``, ``lsf``, ``htcondor``, ``slurm``): pure functions that build argv lists and
scripts and parse outputs. ``schedulerd.drivers.batch.BatchDriver`` runs a dialect
through a transport.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Phase(enum.StrEnum):
    """What a batch system (or history, or an exit file) says about one of our jobs."""

    QUEUED = "queued"  # waiting in the batch queue
    RUNNING = "running"
    HELD = "held"  # held or suspended by the user/admin/system; reason says which
    COMPLETED = "completed"  # ended with exit code 0
    FAILED = "failed"  # ended with a non-zero exit code, or the system failed it
    TIMEOUT = "timeout"  # killed for exceeding its walltime
    CANCELLED = "cancelled"  # removed/killed by someone
    GONE = "gone"  # the system does not know it (left the queue, no history)


FINISHED_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.TIMEOUT, Phase.CANCELLED})


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """One job as a driver needs it to render and submit it.

    ``name`` is the batch job name ``sd-<job id>-<attempt>``; ``workdir`` is a path on
    the head. The exit file is ``<workdir>/.schedulerd/<name>.exit``; stdout and stderr
    go to ``<workdir>/<name>.out`` / ``.err`` unless given.
    """

    job_id: int
    attempt: int
    name: str
    argv: tuple[str, ...]
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    queue: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    walltime_s: int | None = None
    account: str | None = None
    extra_directives: tuple[str, ...] = ()
    requeue: bool = False  # allow the batch system to requeue it by itself
    stdout: str | None = None
    stderr: str | None = None

    @property
    def stdout_path(self) -> str:
        return self.stdout or f"{self.workdir}/{self.name}.out"

    @property
    def stderr_path(self) -> str:
        return self.stderr or f"{self.workdir}/{self.name}.err"

    @property
    def control_dir(self) -> str:
        return f"{self.workdir}/.schedulerd"

    @property
    def script_path(self) -> str:
        return f"{self.control_dir}/{self.name}.sh"

    @property
    def exit_path(self) -> str:
        return f"{self.control_dir}/{self.name}.exit"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    """The outcome of submitting one job: a native id, or an error."""

    job_id: int
    native_id: str | None = None
    error: str | None = None
    transient: bool = False  # True: try again later without spending an attempt
    auth: bool = False  # refused for our credentials: the job fails, the cluster is degraded


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One job's status as seen on the head."""

    native_id: str
    phase: Phase
    exit_code: int | None = None
    reason: str | None = None  # pending/hold reason, failure reason, ...
    name: str | None = None  # the batch job name, when the output shows it
    started_at: float | None = None  # epoch seconds
    finished_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitRecord:
    """Contents of an exit file written by the job wrapper."""

    exit_code: int
    started_at: float | None = None
    finished_at: float | None = None
    signal: str | None = None  # the signal the wrapper trapped, if any
