"""The job state machine: states, the transition table, and the pure decisions on it.

No I/O. The store applies these decisions with compare-and-set SQL
(``UPDATE ... WHERE id=? AND state=? AND version=?``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from schedulerd.errors import InvalidTransition


class State(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    HELD = "held"
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LOST = "lost"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


S = State

#: Every legal move. A move not listed here raises InvalidTransition.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.PENDING: frozenset({S.READY, S.HELD, S.CANCELLED, S.SKIPPED}),
    S.READY: frozenset({S.SUBMITTING, S.HELD, S.CANCELLED, S.PENDING, S.SKIPPED}),
    # held before submission: back to pending/ready; held by the batch system: back to
    # queued/running, or it may end while held (cancelled on the head, failed, ...)
    S.HELD: frozenset(
        {
            S.PENDING, S.READY, S.QUEUED, S.RUNNING, S.CANCELLED, S.SKIPPED,
            S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST,
        }
    ),  # fmt: skip
    # submit intent committed: adopted (queued), not found after a crash or a transient
    # submit error (ready again), refused for good (failed), or cancelled meanwhile
    S.SUBMITTING: frozenset({S.QUEUED, S.READY, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset(
        {S.RUNNING, S.HELD, S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST, S.CANCELLED}
    ),
    S.RUNNING: frozenset(
        {S.QUEUED, S.HELD, S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST, S.CANCELLED}
    ),
    S.COMPLETED: frozenset(),
    # retry (automatic while attempts remain, or by the user) goes back to ready
    S.FAILED: frozenset({S.READY, S.PENDING}),
    S.TIMEOUT: frozenset({S.READY, S.PENDING}),
    S.LOST: frozenset({S.READY, S.PENDING}),
    S.CANCELLED: frozenset({S.READY, S.PENDING}),
    S.SKIPPED: frozenset({S.READY, S.PENDING}),
}

TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST, S.CANCELLED, S.SKIPPED})
#: terminal states that make dependent jobs skipped
UNSUCCESSFUL = TERMINAL - {S.COMPLETED}
#: states that occupy a slot on a cluster
ACTIVE = frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING})
#: states the poller watches on the head
ON_HEAD = frozenset({S.QUEUED, S.RUNNING})
#: terminal states that spend an attempt and may be retried automatically
RETRYABLE = frozenset({S.FAILED, S.TIMEOUT, S.LOST})
#: user actions and the states they are allowed from
CANCELLABLE = frozenset(
    {S.PENDING, S.READY, S.HELD, S.SUBMITTING, S.QUEUED, S.RUNNING}
)  # fmt: skip
#: held in our database; a job already on the head is held by the batch system instead
#: (the control server asks the driver, the poller records what the head says)
HOLDABLE = frozenset({S.PENDING, S.READY})
USER_RETRYABLE = UNSUCCESSFUL


def check(current: State, target: State) -> None:
    """Raise InvalidTransition unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"cannot go from {current} to {target}")


def is_legal(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def initial_state(parent_states: Iterable[State]) -> State:
    """State of a new (or re-armed) job from its parents' states."""
    states = list(parent_states)
    if any(s in UNSUCCESSFUL for s in states):
        return S.SKIPPED
    if all(s is S.COMPLETED for s in states):
        return S.READY
    return S.PENDING


def after_finish(outcome: State, *, attempt: int, max_attempts: int) -> State | None:
    """Where an ended attempt goes next: ``READY`` for an automatic retry, else None."""
    if outcome in RETRYABLE and attempt < max_attempts:
        return S.READY
    return None


def is_final(state: State, *, attempt: int, max_attempts: int) -> bool:
    """True when the job will not change any more unless a user acts on it: it completed,
    was cancelled or skipped, or ended failed/timeout/lost with no attempt left. (With an
    attempt left the store moves it on to ``ready`` at once, by :func:`after_finish`.)"""
    return state in TERMINAL and after_finish(state, attempt=attempt, max_attempts=max_attempts) is None


def action_target(action: str, current: State, *, has_native_id: bool) -> State:
    """The state a user action moves a job to, or InvalidTransition.

    ``hold`` of a job on the head is done by the driver and observed by the poller, so
    the store records ``held`` only once the head says so; here we only check it is
    allowed. ``release`` of a job held on the head goes back to ``queued``.
    """
    if action == "cancel":
        if current not in CANCELLABLE:
            raise InvalidTransition(f"cannot cancel a job that is {current}")
        return S.CANCELLED
    if action == "hold":
        if current not in HOLDABLE:
            raise InvalidTransition(f"cannot hold a job that is {current}")
        return S.HELD
    if action == "release":
        if current is not S.HELD:
            raise InvalidTransition(f"cannot release a job that is {current}, not held")
        return S.QUEUED if has_native_id else S.READY
    if action == "retry":
        if current not in USER_RETRYABLE:
            raise InvalidTransition(f"cannot retry a job that is {current}")
        return S.READY
    raise ValueError(f"unknown action {action!r}")
