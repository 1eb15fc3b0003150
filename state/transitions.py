"""The job state machine: states, the transition table, and user actions, as data.

No I/O. The store applies these decisions with compare-and-set SQL
(``UPDATE ... WHERE id=? AND state=? AND version=?``): :data:`TRANSITIONS` says which
moves exist, :data:`USER_ACTIONS` which of them a user may ask for, and
:func:`plan_action` turns one request on one job into a :class:`~.models.Change`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schedulerd.errors import InvalidTransition, JobNotFound, SchedulerdError
from schedulerd.state.retry import fresh_attempt


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
            S.PENDING,
            S.READY,
            S.QUEUED,
            S.RUNNING,
            S.CANCELLED,
            S.SKIPPED,
            S.COMPLETED,
            S.FAILED,
            S.TIMEOUT,
            S.LOST,
        }
    ),
    # submit intent committed: adopted (queued), not found after a crash or a transient
    # submit error (ready again), refused for good (failed), or cancelled meanwhile
    S.SUBMITTING: frozenset({S.QUEUED, S.READY, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.HELD, S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST, S.CANCELLED}),
    S.RUNNING: frozenset({S.QUEUED, S.HELD, S.COMPLETED, S.FAILED, S.TIMEOUT, S.LOST, S.CANCELLED}),
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
#: terminal states that spend an attempt and may be retried automatically
RETRYABLE = frozenset({S.FAILED, S.TIMEOUT, S.LOST})
#: not yet on the head: a parent that did not complete skips them
SKIPPABLE = frozenset({S.PENDING, S.READY, S.HELD})


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
    return (
        state in TERMINAL
        and after_finish(state, attempt=attempt, max_attempts=max_attempts) is None
    )


# --- user actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UserAction:
    """What one user action does, as data (see :data:`USER_ACTIONS`).

    ``target`` is where the job goes; a target of ``ready`` is refined by the job's
    parents (:func:`initial_state`: a job whose parents have not all completed waits
    ``pending``). A job the head has in state ``on_head_from`` is not changed by the store:
    the action is recorded as a durable intent that the poller carries out there, and the
    state becomes ``target_on_head`` when a poll sees it (:func:`plan_head_intent`).
    """

    name: str
    allowed: frozenset[State]
    refusal: str  # formatted with {state}
    target: State
    #: on the head: an intent for the poller from this state, observed as ``target_on_head``
    on_head_from: State | None = None
    target_on_head: State | None = None
    #: a job on the head is also marked for the poller to kill it there
    kill_on_head: bool = False
    #: the job starts a fresh attempt (refused while a parent did not complete)
    new_attempt: bool = False


#: user actions and the states they are allowed from. ``hold`` of a job queued on the
#: head and ``release`` of a job held there are intents the poller carries out (like the
#: kill of a cancel), observed as ``held``/``queued``; the store records ``held`` and
#: ``ready``/``pending`` itself only for a job not yet submitted.
USER_ACTIONS: Mapping[str, UserAction] = {
    "cancel": UserAction(
        name="cancel",
        allowed=frozenset({S.PENDING, S.READY, S.HELD, S.SUBMITTING, S.QUEUED, S.RUNNING}),
        refusal="cannot cancel a job that is {state}",
        target=S.CANCELLED,
        kill_on_head=True,
    ),
    "hold": UserAction(
        name="hold",
        allowed=frozenset({S.PENDING, S.READY}),
        refusal="cannot hold a job that is {state}",
        target=S.HELD,
        on_head_from=S.QUEUED,
        target_on_head=S.HELD,
    ),
    "release": UserAction(
        name="release",
        allowed=frozenset({S.HELD}),
        refusal="cannot release a job that is {state}, not held",
        target=S.READY,
        on_head_from=S.HELD,
        target_on_head=S.QUEUED,
    ),
    "retry": UserAction(
        name="retry",
        allowed=UNSUCCESSFUL,
        refusal="cannot retry a job that is {state}",
        target=S.READY,
        new_attempt=True,
    ),
}

CANCELLABLE = USER_ACTIONS["cancel"].allowed
HOLDABLE = USER_ACTIONS["hold"].allowed
USER_RETRYABLE = USER_ACTIONS["retry"].allowed


def user_action(name: str) -> UserAction:
    try:
        return USER_ACTIONS[name]
    except KeyError:
        raise ValueError(f"unknown action {name!r}") from None


def action_target(action: str, current: State) -> State:
    """The state a user action moves a job to before its parents are looked at, or
    InvalidTransition."""
    spec = user_action(action)
    if current not in spec.allowed:
        raise InvalidTransition(spec.refusal.format(state=current))
    return spec.target


#: where a job with a native id is on the head (the poller watches these): hold/release
#: there go through :func:`plan_head_intent`, a cancel there is carried out on the head
ON_HEAD = frozenset({S.QUEUED, S.RUNNING, S.HELD})
#: the intents the poller carries out on a head
HEAD_ACTIONS = frozenset(name for name, a in USER_ACTIONS.items() if a.on_head_from is not None)


def is_head_intent(action: str, current: State, *, native_id: str | None) -> bool:
    """True when ``action`` on this job is an intent for the head, not a store change."""
    return action in HEAD_ACTIONS and native_id is not None and current in ON_HEAD


def plan_head_intent(action: str, current: State, pending: str | None) -> str | None:
    """The head intent left pending after ``action`` (hold/release) on a job the head has
    in ``current`` with ``pending`` recorded, or InvalidTransition (pure).

    From ``on_head_from`` the action itself is pending (replacing any other). A job already
    where the action leads with the opposite intent pending (hold, then release before the
    poller acted) withdraws it: None, nothing is sent to the head."""
    spec = user_action(action)
    if current is spec.on_head_from:
        return action
    if pending is not None and pending != action and current is spec.target_on_head:
        return None
    raise InvalidTransition(spec.refusal.format(state=current))


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionPlan:
    """Where a user action takes one job: the target and the columns it sets besides."""

    target: State
    fields: dict[str, Any]


def plan_action(
    action: str,
    current: State,
    *,
    job_id: int,
    attempt: int,
    max_attempts: int,
    native_id: str | None,
    parent_states: Iterable[State],
) -> ActionPlan:
    """One user action on one job, or InvalidTransition (pure)."""
    spec = user_action(action)
    target = action_target(action, current)
    fields: dict[str, Any] = {}
    if spec.kill_on_head and native_id and (current in ACTIVE or current in ON_HEAD):
        # held on the head too: left there, an admin's release would run it after all
        fields["kill_pending"] = 1
    if target is S.READY:
        target = initial_state(parent_states)
    if spec.new_attempt:
        if target is S.SKIPPED:
            raise InvalidTransition(
                f"job {job_id} depends on a job that did not complete; retry that first"
            )
        fields = fresh_attempt(attempt + 1, None)
        fields["max_attempts"] = max(max_attempts, attempt + 1)
    return ActionPlan(target=target, fields=fields)


def refused_all(errors: dict[int, SchedulerdError]) -> SchedulerdError:
    """The one error of a user action refused for some of its jobs (all or nothing):
    the first refusal's class and message, with every refused job in ``data``."""
    first_id, first = next(iter(errors.items()))
    refused = []
    for jid, e in errors.items():
        entry: dict[str, Any] = {"id": jid, "code": e.code, "message": e.message}
        if e.data is not None:
            entry["data"] = e.data
        refused.append(entry)
    extra = f" (and {len(errors) - 1} more; nothing was changed)" if len(errors) > 1 else ""
    message = first.message
    # "no job with id N" names the job already
    if not message.startswith(f"job {first_id} ") and not isinstance(first, JobNotFound):
        message = f"job {first_id}: {message}"
    return type(first)(f"{message}{extra}", data={"refused": refused[:100]})
