"""Retry policy: the one backoff function, and what a fresh attempt resets.

Pure. Used by the store (an automatic retry waits :func:`retry_delay` before it may be
submitted again), the cluster worker (the pause after rounds the head refused) and the
SSH transport (the pause after failed connections, jittered by the caller). Whether an
ended attempt is retried at all is the state machine's
(:func:`schedulerd.state.transitions.after_finish`).
"""

from __future__ import annotations

from typing import Any

RETRY_BASE = 30.0
"""The default first delay of an automatic job retry (config ``retry_base``)."""
RETRY_CAP = 3600.0
"""The longest an automatic job retry waits."""


def retry_delay(n: int, *, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Doubling backoff: ``base`` for ``n`` = 1 (and below), then 2, 4, 8, ... times
    ``base``, never more than ``cap``. For a job, ``n`` is the attempt that just ended
    (30 s, 60 s, 120 s, ... capped at an hour); the exponent stops growing at 62, so a
    huge ``n`` never overflows."""
    return min(cap, base * 2.0 ** min(max(0, n - 1), 62))


def fresh_attempt(attempt: int, not_before: float | None) -> dict[str, Any]:
    """The columns a new attempt ``attempt`` sets: what the last one left is cleared, and
    it may not be submitted before ``not_before`` (None: at once)."""
    return {
        "attempt": attempt,
        "native_id": None,
        "exit_code": None,
        "not_before": not_before,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
    }
