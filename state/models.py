"""The store's domain types: jobs and events as read back, and what callers ask of it.

Plain data, no I/O. A job's spec travels as a :class:`JobSpec` from the submit's
validation to the driver's :class:`~schedulerd.drivers.base.JobRequest`; the store keeps it
in the ``spec`` column as JSON (defaults left out) and reads it back typed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schedulerd.state.transitions import State

JOB_COLUMNS = (
    "id", "name", "campaign", "step", "idx", "state", "attempt", "max_attempts", "epoch",
    "version", "cluster", "queue", "workdir", "native_id", "spec", "fingerprint", "result",
    "exit_code", "reason", "not_before", "kill_pending", "created_at", "queued_at",
    "started_at", "finished_at",
)  # fmt: skip
EVENT_COLUMNS = (
    "id", "job_id", "at", "from_state", "to_state", "reason", "attempt", "native_id",
    "version", "data",
)  # fmt: skip
#: columns a transition may set besides state/version
MUTABLE = frozenset(
    {"attempt", "max_attempts", "native_id", "exit_code", "reason", "not_before",
     "kill_pending", "queued_at", "started_at", "finished_at", "result", "epoch"}
)  # fmt: skip


class JobSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What a job runs and asks for, as checked at submit (``schedulerd/jobspec.py``) and
    stored in the ``spec`` column.

    Its JSON is the column's format: the fields in this order, defaults left out, so
    ``{"argv":["true"]}`` is a job that asks for nothing else (the rows written when the
    spec was a plain dict read back unchanged). Unknown keys in a stored spec are ignored.
    ``outputs_root`` is the cluster's outputs directory when the job has ``outputs``."""

    argv: tuple[str, ...]
    env: dict[str, str] = {}
    cpus: int | None = None
    memory_mb: int | None = None
    walltime_s: int | None = None
    account: str | None = None
    directives: tuple[str, ...] = ()
    requeue: bool = False
    inputs: tuple[str, ...] = ()  # absolute paths on this machine
    outputs: tuple[str, ...] = ()  # glob patterns relative to the workdir
    outputs_root: str | None = None


_decode_spec = msgspec.json.Decoder(JobSpec).decode


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    name: str
    campaign: str | None
    step: str | None
    idx: int | None
    state: State
    attempt: int
    max_attempts: int
    epoch: int
    version: int
    cluster: str
    queue: str | None
    workdir: str
    native_id: str | None
    spec: JobSpec
    fingerprint: str | None
    result: Any
    exit_code: int | None
    reason: str | None
    not_before: float | None
    kill_pending: bool
    created_at: float
    queued_at: float | None
    started_at: float | None
    finished_at: float | None

    @property
    def submit_name(self) -> str:
        return f"sd-{self.id}-{self.attempt}"

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        values["state"] = State(values["state"])
        values["spec"] = _decode_spec(values["spec"])
        values["result"] = None if values["result"] is None else json.loads(values["result"])
        values["kill_pending"] = bool(values["kill_pending"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    job_id: int
    at: float
    from_state: State | None
    to_state: State
    reason: str | None
    attempt: int
    native_id: str | None
    version: int
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Event:
        values = dict(zip(EVENT_COLUMNS, row, strict=True))
        values["from_state"] = None if values["from_state"] is None else State(values["from_state"])
        values["to_state"] = State(values["to_state"])
        values["data"] = None if values["data"] is None else json.loads(values["data"])
        return cls(**values)


class NewJob(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A job to create. ``after`` are existing job ids; ``after_local`` are indexes of
    earlier jobs in the same ``create_jobs`` call.

    A msgspec Struct rather than a frozen dataclass: a 100,000-job submit builds one per
    job, and the dataclass's ``__init__`` cost 5 µs each against 0.3 µs. It holds plain
    data only, so it need not be tracked by the cycle collector (``gc=False``)."""

    name: str
    cluster: str
    workdir: str
    spec: JobSpec
    queue: str | None = None
    max_attempts: int = 1
    campaign: str | None = None
    step: str | None = None
    idx: int | None = None
    fingerprint: str | None = None
    after: tuple[int, ...] = ()
    after_local: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    """What a waiter needs to know of a job (see :meth:`Store.job_states`)."""

    id: int
    state: State
    attempt: int
    max_attempts: int
    exit_code: int | None
    cluster: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchedJob:
    """What a poll needs of a job the head has (see :meth:`Store.watched_jobs`): read
    without its spec and result, so a poll decodes no JSON."""

    id: int
    state: State
    version: int
    attempt: int
    native_id: str
    reason: str | None
    started_at: float | None
    submitted_at: float  # queued_at, else created_at


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitKey:
    """A job.submit call's idempotency key, stored with its jobs in their transaction.

    ``digest`` identifies the call's params (the same token with another digest is
    refused); ``order`` gives, for each job in the caller's order, its index among the
    jobs as created (``None``: the same order)."""

    token: str
    digest: str
    order: Sequence[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """A stored job.submit call: the ids it answered, in the caller's order."""

    token: str
    digest: str
    ids: list[int]
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A requested transition of one job (compare-and-set on state and version)."""

    job_id: int
    to: State
    expect_state: State | frozenset[State] | None = None
    expect_version: int | None = None
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    states: tuple[State, ...] = ()
    campaign: str | None = None
    cluster: str | None = None
    name: str | None = None
