"""The pure transition table (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.errors import InvalidTransition
from schedulerd.state import transitions
from schedulerd.state.transitions import TRANSITIONS, State

states = st.sampled_from(list(State))
actions = st.sampled_from(["cancel", "hold", "release", "retry"])


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    for targets in TRANSITIONS.values():
        assert targets <= set(State)


def test_completed_is_final() -> None:
    assert TRANSITIONS[State.COMPLETED] == frozenset()


def test_no_self_loops() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets


def test_every_state_reachable_from_creation() -> None:
    seen = {State.PENDING, State.READY, State.SKIPPED}
    frontier = list(seen)
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(State)


def test_every_state_can_end() -> None:
    # from every state some path leads to a terminal state: nothing can hang forever
    for start in State:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & transitions.TERMINAL, start


def test_submission_only_through_submitting() -> None:
    # invariant 2: nothing reaches the head without a committed submit intent
    for state, targets in TRANSITIONS.items():
        if State.QUEUED in targets:
            assert state in (State.SUBMITTING, State.RUNNING, State.HELD)
    assert TRANSITIONS[State.READY] & {State.QUEUED, State.RUNNING} == frozenset()


@given(states, states)
def test_check_agrees_with_table(a: State, b: State) -> None:
    if b in TRANSITIONS[a]:
        transitions.check(a, b)
        assert transitions.is_legal(a, b)
    else:
        with pytest.raises(InvalidTransition):
            transitions.check(a, b)
        assert not transitions.is_legal(a, b)


@given(actions, states)
def test_user_actions_only_make_legal_moves(action: str, state: State) -> None:
    try:
        target = transitions.action_target(action, state)
    except InvalidTransition:
        return
    assert transitions.is_legal(state, target), (action, state, target)


@given(states)
def test_cancel_never_touches_terminal_jobs(state: State) -> None:
    if state in transitions.TERMINAL:
        with pytest.raises(InvalidTransition):
            transitions.action_target("cancel", state)


@given(st.lists(states, max_size=6))
def test_initial_state(parents: list[State]) -> None:
    result = transitions.initial_state(parents)
    if any(p in transitions.UNSUCCESSFUL for p in parents):
        assert result is State.SKIPPED
    elif all(p is State.COMPLETED for p in parents):
        assert result is State.READY
    else:
        assert result is State.PENDING


@given(states, st.integers(1, 5), st.integers(1, 5))
def test_after_finish_retries_only_while_attempts_remain(
    outcome: State, attempt: int, max_attempts: int
) -> None:
    follow = transitions.after_finish(outcome, attempt=attempt, max_attempts=max_attempts)
    if outcome in transitions.RETRYABLE and attempt < max_attempts:
        assert follow is State.READY and transitions.is_legal(outcome, State.READY)
    else:
        assert follow is None


# --- the table, pair by pair, and the user actions as data -----------------------------------

PAIRS = [(a, b) for a in State for b in State]


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_is_either_a_listed_move_or_refused(current: State, target: State) -> None:
    legal = target in TRANSITIONS[current]
    assert transitions.is_legal(current, target) is legal
    if legal:
        transitions.check(current, target)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot go from {current} to {target}"):
            transitions.check(current, target)


#: (action, state) -> target of a store change before the parents are looked at; every
#: combination not listed is refused. Written out so a change to USER_ACTIONS shows here.
EXPECTED_ACTIONS = {
    **{("cancel", s): State.CANCELLED for s in ("pending", "ready", "held", "submitting",
                                              "queued", "running")},
    **{("hold", s): State.HELD for s in ("pending", "ready")},
    ("release", "held"): State.READY,
    **{("retry", s): State.READY for s in ("failed", "timeout", "lost", "cancelled", "skipped")},
}  # fmt: skip
COMBINATIONS = [(a, s) for a in transitions.USER_ACTIONS for s in State]


@pytest.mark.parametrize(("action", "state"), COMBINATIONS)
def test_user_action_targets_exhaustively(action: str, state: State) -> None:
    expected = EXPECTED_ACTIONS.get((action, state.value))
    if expected is None:
        with pytest.raises(InvalidTransition, match=f"cannot {action} a job that is {state}"):
            transitions.action_target(action, state)
    else:
        assert transitions.action_target(action, state) is expected
        assert transitions.is_legal(state, expected)


def test_an_unknown_action_is_a_bug_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="unknown action 'kill'"):
        transitions.action_target("kill", State.READY)


#: hold/release of a job on the head: (action, state, pending intent) -> the intent left
#: pending (None: the pending opposite is withdrawn); every combination not listed is refused
EXPECTED_HEAD_INTENTS: dict[tuple[str, str, str | None], str | None] = {
    **{("hold", "queued", p): "hold" for p in (None, "hold", "release")},
    **{("release", "held", p): "release" for p in (None, "hold", "release")},
    ("release", "queued", "hold"): None,  # hold then release before the poller acted
    ("hold", "held", "release"): None,
}
HEAD_COMBINATIONS = [
    (a, s, p) for a in sorted(transitions.HEAD_ACTIONS) for s in transitions.ON_HEAD
    for p in (None, "hold", "release")
]  # fmt: skip


@pytest.mark.parametrize(("action", "state", "pending"), HEAD_COMBINATIONS)
def test_head_intents_exhaustively(action: str, state: State, pending: str | None) -> None:
    assert transitions.is_head_intent(action, state, native_id="7")
    key = (action, state.value, pending)
    if key not in EXPECTED_HEAD_INTENTS:
        with pytest.raises(InvalidTransition, match=f"cannot {action} a job that is {state}"):
            transitions.plan_head_intent(action, state, pending)
    else:
        assert transitions.plan_head_intent(action, state, pending) == EXPECTED_HEAD_INTENTS[key]


def test_only_hold_and_release_of_a_job_on_the_head_are_intents() -> None:
    assert transitions.HEAD_ACTIONS == {"hold", "release"}
    assert not transitions.is_head_intent("hold", State.QUEUED, native_id=None)
    assert not transitions.is_head_intent("hold", State.READY, native_id="7")
    assert not transitions.is_head_intent("cancel", State.QUEUED, native_id="7")
    for action in transitions.HEAD_ACTIONS:  # the head's answer is a legal move
        spec = transitions.USER_ACTIONS[action]
        assert spec.on_head_from is not None and spec.target_on_head is not None
        assert transitions.is_legal(spec.on_head_from, spec.target_on_head)


def _plan(action: str, state: State, *, native_id: str | None = None, parents: tuple[State, ...] = (),
          attempt: int = 1, max_attempts: int = 1) -> transitions.ActionPlan:  # fmt: skip
    return transitions.plan_action(
        action, state, job_id=7, attempt=attempt, max_attempts=max_attempts,
        native_id=native_id, parent_states=parents,
    )  # fmt: skip


def test_cancel_marks_a_job_on_the_head_for_killing_only() -> None:
    assert _plan("cancel", State.RUNNING, native_id="42").fields == {"kill_pending": 1}
    assert _plan("cancel", State.SUBMITTING, native_id="42").fields == {"kill_pending": 1}
    # held on the head: it must go from there too (an admin's release would run it)
    assert _plan("cancel", State.HELD, native_id="42").fields == {"kill_pending": 1}
    assert _plan("cancel", State.HELD).fields == {}  # held before it was ever submitted
    assert _plan("cancel", State.READY).fields == {}
    assert _plan("cancel", State.RUNNING, native_id="42").target is State.CANCELLED


def test_release_and_retry_wait_for_parents_that_have_not_completed() -> None:
    assert _plan("release", State.HELD, parents=(State.COMPLETED,)).target is State.READY
    assert _plan("release", State.HELD, parents=(State.RUNNING,)).target is State.PENDING
    assert _plan("release", State.HELD, parents=(State.FAILED,)).target is State.SKIPPED
    assert _plan("retry", State.FAILED, parents=(State.RUNNING,)).target is State.PENDING
    assert _plan("retry", State.FAILED).target is State.READY


def test_retry_starts_a_fresh_attempt_and_refuses_behind_a_failed_parent() -> None:
    plan = _plan("retry", State.LOST, attempt=3, max_attempts=2)
    assert plan.fields == {
        "attempt": 4, "max_attempts": 4, "native_id": None, "exit_code": None,
        "not_before": None, "queued_at": None, "started_at": None, "finished_at": None,
    }  # fmt: skip
    assert _plan("retry", State.FAILED, attempt=1, max_attempts=5).fields["max_attempts"] == 5
    with pytest.raises(InvalidTransition, match="job 7 depends on a job that did not complete"):
        _plan("retry", State.FAILED, parents=(State.CANCELLED,))


@given(actions, states, st.booleans(), st.lists(states, max_size=3))
def test_planned_actions_only_make_legal_moves(
    action: str, state: State, native: bool, parents: list[State]
) -> None:
    try:
        plan = _plan(action, state, native_id="5" if native else None, parents=tuple(parents))
    except InvalidTransition:
        return
    assert transitions.is_legal(state, plan.target), (action, state, plan.target)
