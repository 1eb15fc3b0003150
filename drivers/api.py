"""The async driver contract the scheduler talks to (DESIGN.md "Drivers")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schedulerd.drivers.base import JobRequest, Observation, SubmitResult
from schedulerd.drivers.transport import Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveJob:
    """A job the poller watches: it has (or had) a native id on the head."""

    job_id: int
    native_id: str
    request: JobRequest
    submitted_at: float  # epoch seconds; history queries start from the earliest


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One line of ``schedctl clusters check``."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResult:
    """What one poll learned. ``observations`` is keyed by native id and holds only
    jobs with news; a job that left the queue without any answer (history, exit file)
    for ``exit_read_timeout`` comes back with phase ``GONE``. ``foreign_jobs`` counts this
    user's unfinished jobs in the batch system that are not ours (not among the polled
    jobs and not named ``sd-<id>-<attempt>``), or None when unknown."""

    observations: dict[str, Observation]
    foreign_jobs: int | None = None


class Driver(Protocol):
    name: str

    @property
    def transport(self) -> Transport:
        """Where the head's files are: staging goes through it."""
        ...

    async def submit(self, jobs: Sequence[JobRequest]) -> list[SubmitResult]:
        """Submit jobs (many per command where possible), one result per job, in order.
        Raises TransportError when the head cannot be reached (nothing was decided)."""
        ...

    async def poll(self, active: Sequence[ActiveJob]) -> PollResult:
        """One queue command, then history and exit files for those that left it."""
        ...

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """Cancel on the head; jobs already gone are fine."""
        ...

    async def hold(self, native_ids: Sequence[str]) -> None: ...

    async def release(self, native_ids: Sequence[str]) -> None: ...

    async def lookup(self, jobs: Sequence[JobRequest]) -> dict[str, str]:
        """After a crash: which of these (by batch name) reached the head; name -> native id."""
        ...

    async def check(self) -> list[CheckResult]:
        """Connectivity, commands, queue, workdir, dry-run submit."""
        ...

    async def aclose(self) -> None: ...
