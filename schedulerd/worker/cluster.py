"""One cluster's worker: reconcile after a crash, then submit what is ready and poll what
runs, side by side; plus the operator's drain and the status view (``clusters.list``).

A worker never decides a job's fate from a transport failure: the head being
unreachable pauses the worker (the driver's backoff), and job states stay as they are.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc

from schedulerd.config import ClusterConfig, Settings
from schedulerd.drivers.api import Driver
from schedulerd.state.store import Store
from schedulerd.worker.clock import Clock, SystemClock
from schedulerd.worker.health import ClusterHealth
from schedulerd.worker.poller import Poller
from schedulerd.worker.reconciler import Reconciler
from schedulerd.worker.stager import Stager
from schedulerd.worker.submitter import Submitter


def drained_key(cluster: str) -> str:
    """The settings key that remembers an operator's ``clusters.drain``."""
    return f"cluster.{cluster}.drained"


class ClusterWorker:
    def __init__(
        self,
        config: ClusterConfig,
        settings: Settings,
        store: Store,
        driver: Driver,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.driver = driver
        self.name = config.name
        self.drained = False  # by an operator (clusters.drain); persisted in the store
        self.removed = False  # gone from the config at a reload: watched, never fed
        clock = clock or SystemClock()
        self.health = ClusterHealth(config.name)
        first_poll = anyio.Event()
        self.stager = Stager(config, settings, driver)
        self.reconciler = Reconciler(config, store, driver, clock, self.health)
        self.poller = Poller(config, store, driver, clock=clock, health=self.health,
                             stager=self.stager, first_poll=first_poll)  # fmt: skip
        self.submitter = Submitter(config, settings, store, driver, clock=clock,
                                   health=self.health, stager=self.stager,
                                   reconciler=self.reconciler, first_poll=first_poll,
                                   submitted=self.poller.poke,
                                   draining=lambda: self.draining)  # fmt: skip

    @property
    def draining(self) -> bool:
        return self.drained or self.removed

    def poke(self) -> None:
        """Poll soon (a user action may have work for the head)."""
        self.poller.poke()

    def reconfigure(self, config: ClusterConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.stager.config, self.stager.settings = config, settings
        self.reconciler.config = config
        self.poller.config = config
        self.submitter.reconfigure(config, settings)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self.reconciler.reconcile()
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.submitter.run)
            tg.start_soon(self.poller.run)

    async def set_drained(self, drained: bool) -> None:
        """Drain or resume; remembered across restarts and reloads. Resume also means
        "try now": it ends a pause after refused submits and the stop after refused
        credentials."""
        await self.store.set_setting(drained_key(self.name), drained)
        self.drained = drained
        if not drained:
            self.submitter.resume()
            self.poke()

    def status(self) -> dict[str, Any]:
        health = self.health
        return {
            "name": self.name,
            "scheduler": self.config.scheduler,
            "host": self.config.host,
            "max_jobs": self.config.max_jobs,
            "foreign_jobs": health.foreign_jobs,
            "draining": self.draining,
            "last_poll": health.last_poll,
            "last_error": health.last_error,
            "degraded": health.degraded,
            "degraded_reason": health.degraded_reason,
            "submits_stopped": health.auth_refused is not None,
            "poll_failures": health.poll_failures,
            "submit_paused_until": self.submitter.paused_until,
            "last_refusal": self.submitter.last_refusal,
            "poll_interval": self.config.poll_interval,
        }
