"""The pure transition table (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulerd.errors import InvalidTransition
from schedulerd.state import machine
from schedulerd.state.machine import TRANSITIONS, State

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
        assert seen & machine.TERMINAL, start


def test_submission_only_through_submitting() -> None:
    # invariant 2: nothing reaches the head without a committed submit intent
    for state, targets in TRANSITIONS.items():
        if State.QUEUED in targets:
            assert state in (State.SUBMITTING, State.RUNNING, State.HELD)
    assert TRANSITIONS[State.READY] & {State.QUEUED, State.RUNNING} == frozenset()


@given(states, states)
def test_check_agrees_with_table(a: State, b: State) -> None:
    if b in TRANSITIONS[a]:
        machine.check(a, b)
        assert machine.is_legal(a, b)
    else:
        with pytest.raises(InvalidTransition):
            machine.check(a, b)
        assert not machine.is_legal(a, b)


@given(actions, states, st.booleans())
def test_user_actions_only_make_legal_moves(action: str, state: State, native: bool) -> None:
    try:
        target = machine.action_target(action, state, has_native_id=native)
    except InvalidTransition:
        return
    assert machine.is_legal(state, target), (action, state, target)


@given(states)
def test_cancel_never_touches_terminal_jobs(state: State) -> None:
    if state in machine.TERMINAL:
        with pytest.raises(InvalidTransition):
            machine.action_target("cancel", state, has_native_id=False)


@given(st.lists(states, max_size=6))
def test_initial_state(parents: list[State]) -> None:
    result = machine.initial_state(parents)
    if any(p in machine.UNSUCCESSFUL for p in parents):
        assert result is State.SKIPPED
    elif all(p is State.COMPLETED for p in parents):
        assert result is State.READY
    else:
        assert result is State.PENDING


@given(states, st.integers(1, 5), st.integers(1, 5))
def test_after_finish_retries_only_while_attempts_remain(outcome: State, attempt: int, max_attempts: int) -> None:
    follow = machine.after_finish(outcome, attempt=attempt, max_attempts=max_attempts)
    if outcome in machine.RETRYABLE and attempt < max_attempts:
        assert follow is State.READY and machine.is_legal(outcome, State.READY)
    else:
        assert follow is None
