"""The worker's clock: wall time for stored timestamps, and the waits that decide "when".

Every part of the worker reads time and waits through a :class:`Clock`, so a test can
drive the submit pause, the refusal pause, the token bucket and the poll rounds with a
fake one (``tests/fakeclock.py``) instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float:
        """Wall time (epoch seconds): what is stored (``queued_at``, ``not_before``)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back (rates, intervals)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    async def wait(self, waiter: Callable[[], Awaitable[object]], seconds: float) -> bool:
        """Await ``waiter()`` for at most ``seconds``; whether it returned in time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def wait(self, waiter: Callable[[], Awaitable[object]], seconds: float) -> bool:
        with anyio.move_on_after(seconds) as scope:
            await waiter()
        return not scope.cancelled_caught
