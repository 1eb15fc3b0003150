"""The one backoff function (state/retry.py) and what its callers make of it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from schedulerd.state.retry import RETRY_BASE, RETRY_CAP, fresh_attempt, retry_delay
from schedulerd.worker.submitter import SUBMIT_PAUSE_MAX, refusal_pause


def test_job_retries_wait_30_60_120_seconds_up_to_an_hour() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert (RETRY_BASE, RETRY_CAP) == (30.0, 3600.0)
    assert retry_delay(0) == retry_delay(1) == 30  # nothing below the base
    assert retry_delay(2, base=0.5) == 1.0


def test_a_huge_count_does_not_overflow() -> None:
    assert retry_delay(10**6) == RETRY_CAP
    assert retry_delay(10**6, base=1.0, cap=math.inf) == 2.0**62


@given(st.integers(1, 200), st.floats(0, 1e4), st.floats(0, 1e6))
def test_backoff_doubles_until_the_cap(n: int, base: float, cap: float) -> None:
    delay = retry_delay(n, base=base, cap=cap)
    assert delay <= cap
    assert delay == min(cap, base * 2.0 ** min(n - 1, 62))
    assert retry_delay(n + 1, base=base, cap=cap) >= delay


def test_the_refusal_pause_is_the_same_backoff_capped_at_ten_minutes() -> None:
    assert [refusal_pause(30.0, r) for r in range(1, 7)] == [30, 60, 120, 240, 480, 600]
    assert SUBMIT_PAUSE_MAX == 600.0
    assert refusal_pause(900.0, 3) == 900.0  # a base above the cap is the pause


def test_a_fresh_attempt_clears_what_the_last_one_left() -> None:
    assert fresh_attempt(3, 12.5) == {
        "attempt": 3, "native_id": None, "exit_code": None, "not_before": 12.5,
        "queued_at": None, "started_at": None, "finished_at": None,
    }  # fmt: skip
