"""Staging: a job's input files uploaded before its submit, its outputs fetched once its
attempt ended on the head (before the end is recorded: a client that sees the job ended
finds its outputs there)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import structlog

from schedulerd.config import ClusterConfig, Settings
from schedulerd.drivers.api import Driver
from schedulerd.drivers.base import JobRequest, SubmitResult
from schedulerd.drivers.staging import output_dir, stage_in, stage_out
from schedulerd.errors import InvalidSpec, SchedulerdError, TransportError
from schedulerd.state.models import Job
from schedulerd.state.transitions import State

#: an attempt that ended in one of these on the head has its outputs fetched
STAGE_OUT_STATES = frozenset({State.COMPLETED, State.FAILED, State.TIMEOUT})
STAGING_CONCURRENCY = 8


class Stager:
    def __init__(self, config: ClusterConfig, settings: Settings, driver: Driver) -> None:
        self.config = config
        self.settings = settings
        self.driver = driver
        self._log = structlog.get_logger(__name__).bind(cluster=config.name)

    async def stage_in(
        self, claimed: Sequence[Job], requests: Sequence[JobRequest]
    ) -> dict[int, SubmitResult]:
        """Upload the input files of the claimed jobs that have any. A job whose input
        is gone from this machine is refused (it fails, nothing is submitted); a
        transport failure raises TransportError after all uploads have ended."""
        todo = [(j, r) for j, r in zip(claimed, requests, strict=True) if j.spec.inputs]
        refused: dict[int, SubmitResult] = {}
        if not todo:
            return refused
        errors: list[TransportError] = []
        limiter = anyio.CapacityLimiter(STAGING_CONCURRENCY)

        async def one(job: Job, request: JobRequest) -> None:
            async with limiter:
                try:
                    await stage_in(self.driver.transport, request, job.spec.inputs)
                except InvalidSpec as exc:
                    refused[job.id] = SubmitResult(job_id=job.id, error=exc.message)
                except TransportError as exc:
                    errors.append(exc)
                except (OSError, SchedulerdError) as exc:
                    # the head refused the file (no space, permissions): the job cannot run
                    refused[job.id] = SubmitResult(
                        job_id=job.id, error=f"staging inputs failed: {exc}"
                    )

        async with anyio.create_task_group() as tg:
            for job, request in todo:
                tg.start_soon(one, job, request)
        if errors:
            raise errors[0]
        if refused:
            self._log.warning("stage_in_refused", job_ids=sorted(refused))
        self._log.info("inputs_staged", count=len(todo) - len(refused))
        return refused

    async def stage_out(self, jobs: Sequence[Job]) -> list[tuple[int, dict[str, Any]]]:
        """Fetch each ended attempt's outputs; (index in ``jobs``, the job's new result).
        Failures are logged (``stage_out_failed``) and recorded, never change a state."""
        records: list[tuple[int, dict[str, Any]]] = []
        limiter = anyio.CapacityLimiter(STAGING_CONCURRENCY)

        async def one(index: int, job: Job) -> None:
            root = job.spec.outputs_root or str(self.settings.outputs_path)
            local_dir = output_dir(root, job.id, job.attempt)
            async with limiter:
                try:
                    fetched = await stage_out(self.driver.transport, job.workdir, job.spec.outputs,
                                              local_dir, command_timeout=self.config.command_timeout)  # fmt: skip
                    outputs: dict[str, Any] = fetched.to_json()
                except (OSError, SchedulerdError) as exc:
                    outputs = {"dir": local_dir, "files": [], "errors": [str(exc)]}
            outputs["attempt"] = job.attempt
            if outputs.get("errors"):
                self._log.warning("stage_out_failed", job_id=job.id, attempt=job.attempt,
                                  errors=outputs["errors"][:10])  # fmt: skip
            self._log.info("outputs_fetched", job_id=job.id, attempt=job.attempt,
                           count=len(outputs["files"]), dir=local_dir)  # fmt: skip
            result = dict(job.result) if isinstance(job.result, dict) else {}
            result["outputs"] = outputs
            records.append((index, result))

        async with anyio.create_task_group() as tg:
            for index, job in enumerate(jobs):
                tg.start_soon(one, index, job)
        return records
