"""A fake :class:`~schedulerd.worker.clock.Clock`: time moves only when a test says so.

The worker's parts sleep and wait on it; :meth:`FakeClock.advance` wakes every wait whose
deadline has come, and :meth:`FakeClock.settle` waits (in real time, bounded) until the
woken tasks are waiting on the clock again, so a test can say "after 29 s nothing was
submitted" without sleeping 29 s -- or sleeping at all.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio


class _Sleeper:
    __slots__ = ("deadline", "woken")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.woken = anyio.Event()


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        # wall time near the real one: the store compares some stamps with its own clock
        self._now = time.time() if start is None else start
        self._sleepers: list[_Sleeper] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        sleeper = _Sleeper(self._now + seconds)
        if seconds <= 0:
            sleeper.woken.set()
        self._sleepers.append(sleeper)
        try:
            await sleeper.woken.wait()
        finally:
            self._sleepers.remove(sleeper)

    async def wait(self, waiter: Callable[[], Awaitable[object]], seconds: float) -> bool:
        returned = False
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                nonlocal returned
                await waiter()
                returned = True
                tg.cancel_scope.cancel()

            tg.start_soon(call)
            await self.sleep(seconds)
            tg.cancel_scope.cancel()
        return returned

    def advance(self, seconds: float) -> None:
        """Move time on; every wait whose deadline has come ends."""
        self._now += seconds
        for sleeper in self._sleepers:
            if sleeper.deadline <= self._now:
                sleeper.woken.set()

    def waits(self) -> list[float]:
        """The seconds left of each wait on the clock, shortest first."""
        return sorted(s.deadline - self._now for s in self._sleepers)

    async def settle(self, tasks: int, *, seconds: float = 10.0) -> list[float]:
        """Wait (real time, at most ``seconds``) until ``tasks`` waits are on the clock and
        none is due; the seconds left of each."""
        with anyio.fail_after(seconds):
            # (ASYNC110: the waits are the worker's own; an event for the test would be a hook in it)
            while not (len(self._sleepers) == tasks
                       and all(s.deadline > self._now for s in self._sleepers)):  # fmt: skip
                await anyio.sleep(0.005)
        return self.waits()
