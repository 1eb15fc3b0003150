"""Crash recovery (invariant 2): jobs a crash left in ``submitting`` are adopted if the
head has them (found by their submit name), else made ``ready`` to be submitted again."""

from __future__ import annotations

import structlog

from schedulerd.config import ClusterConfig
from schedulerd.drivers.api import Driver
from schedulerd.errors import SchedulerdError
from schedulerd.state.models import Change
from schedulerd.state.store import Store
from schedulerd.state.transitions import State
from schedulerd.worker.clock import Clock
from schedulerd.worker.health import ClusterHealth
from schedulerd.worker.jobs import job_request


class Reconciler:
    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        driver: Driver,
        clock: Clock,
        health: ClusterHealth,
    ) -> None:
        self.config = config
        self.store = store
        self.driver = driver
        self.clock = clock
        self.health = health
        self._log = structlog.get_logger(__name__).bind(cluster=config.name)

    async def reconcile(self) -> None:
        """Jobs left in ``submitting`` by a crash: adopt if the head has them, else resubmit.

        Until the head answers, it is asked again every ``min(30 s, poll_interval)``."""
        name = self.config.name
        while True:
            stuck = await self.store.jobs_in_states(name, [State.SUBMITTING])
            if not stuck:
                return
            try:
                found = await self.driver.lookup([job_request(j) for j in stuck])
            except SchedulerdError as exc:
                self.health.last_error = str(exc)
                self._log.warning("head_unreachable", error=str(exc), during="reconcile")
                await self.clock.sleep(min(30.0, self.config.poll_interval))
                continue
            changes = []
            for job in stuck:
                native = found.get(job.submit_name)
                if native is not None:
                    changes.append(Change(job_id=job.id, to=State.QUEUED, expect_state=State.SUBMITTING,
                                          reason=f"adopted {native} after restart",
                                          fields={"native_id": native, "queued_at": self.clock.now()}))  # fmt: skip
                else:
                    changes.append(Change(job_id=job.id, to=State.READY, expect_state=State.SUBMITTING,
                                          reason="not on the head after restart; resubmitting"))  # fmt: skip
            await self.store.apply(changes)
            self._log.info("reconciled", adopted=sum(c.to is State.QUEUED for c in changes),
                           resubmitted=sum(c.to is State.READY for c in changes))  # fmt: skip
            return
