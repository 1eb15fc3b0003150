"""``job.*``: submit, get, states, list, and the user actions cancel, hold, release, retry.

The submit pipeline's plumbing for big calls lives in ``methods/submit.py``; what a job
spec may be is ``jobspec.py``'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog

from schedulerd.drivers.batch import login_relative
from schedulerd.errors import (
    InvalidParams,
    ShuttingDown,
    UnknownCluster,
)
from schedulerd.jobspec import ClusterView, SubmitPlan, build_rows, plan_new_jobs
from schedulerd.methods.base import (
    MAX_BATCH_LIST,
    MAX_LIST_LIMIT,
    ControlContext,
    Handler,
    Session,
)
from schedulerd.methods.submit import (
    SMALL_SUBMIT_BYTES,
    SubmitParams,
    create_in_chunks,
    gc_paused,
    submit_digest,
)
from schedulerd.rpc import Int64, Params
from schedulerd.state.models import Job, JobFilter, SubmitKey
from schedulerd.state.store import same_submission
from schedulerd.state.transitions import State, is_final

log = structlog.get_logger(__name__)


class IdsParams(msgspec.Struct, forbid_unknown_fields=True):
    id: Int64 | None = None
    ids: list[Int64] | None = None
    if_version: Int64 | None = None


class ListParams(msgspec.Struct, forbid_unknown_fields=True):
    state: str | list[str] | None = None
    campaign: str | None = None
    cluster: str | None = None
    name: str | None = None
    limit: Int64 = 100
    before: Int64 | None = None


class StatesParams(msgspec.Struct, forbid_unknown_fields=True):
    """``job.states``: the jobs to look at (1 to MAX_BATCH_LIST ids)."""

    ids: list[Int64]


def ids_of(p: IdsParams) -> list[int]:
    if (p.id is None) == (p.ids is None):
        raise InvalidParams('give exactly one of "id" or "ids"')
    ids = [p.id] if p.id is not None else list(p.ids or [])
    if not ids:
        raise InvalidParams('"ids" is empty')
    if len(ids) > MAX_BATCH_LIST:
        raise InvalidParams(f"at most {MAX_BATCH_LIST} ids per call")
    if p.if_version is not None and len(ids) != 1:
        raise InvalidParams('"if_version" goes with a single job')
    if len(set(ids)) != len(ids):
        raise InvalidParams('"ids" lists a job twice')
    return ids


def states_of(value: str | list[str] | None) -> tuple[State, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    try:
        return tuple(State(n) for n in names)
    except ValueError as exc:
        raise InvalidParams(
            f"unknown state in {names!r}; states are {', '.join(s.value for s in State)}"
        ) from exc


def job_to_wire(job: Job, *, after: list[int] | None = None) -> dict[str, Any]:
    spec = job.spec
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "final": is_final(job.state, attempt=job.attempt, max_attempts=job.max_attempts),
        "exit_code": job.exit_code,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "version": job.version,
        "cluster": job.cluster,
        "queue": job.queue,
        "native_id": job.native_id,
        "submit_name": job.submit_name,
        "campaign": job.campaign,
        "reason": job.reason,
        "argv": list(spec.argv),
        "env": spec.env,
        "cpus": spec.cpus,
        "memory_mb": spec.memory_mb,
        "walltime_s": spec.walltime_s,
        "account": spec.account,
        "workdir": job.workdir,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "outputs_dir": f"{spec.outputs_root}/{job.id}" if spec.outputs_root else None,
        "stdout": f"{job.workdir}/{job.submit_name}.out",
        "stderr": f"{job.workdir}/{job.submit_name}.err",
        "not_before": job.not_before,
        "created_at": job.created_at,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }
    if after is not None:
        out["after"] = after
    return out


# --- job.submit ---------------------------------------------------------------------------


def _cluster_views(ctx: ControlContext) -> tuple[dict[str, ClusterView], str]:
    settings = ctx.settings_getter()
    views = {
        name: ClusterView(
            name=name,
            workdir=c.workdir if c.is_local_transport else login_relative(c.workdir),
            default_queue=c.default_queue,
            is_local=c.is_local_transport,
            outputs_dir=str(settings.outputs_path),
            scheduler=c.scheduler,
            # a local job's cpus take that many of the cluster's max_jobs slots
            slots=c.max_jobs if c.scheduler == "local" else None,
        )
        for name, c in settings.clusters.items()
    }
    default = "local" if "local" in views else next(iter(views))
    return views, default


async def job_submit(session: Session, params: Params) -> Any:
    ctx = session.ctx
    if ctx.stopping:
        raise ShuttingDown()
    views, default = _cluster_views(ctx)
    started = time.perf_counter()
    small = params.raw is None or len(params.raw) <= SMALL_SUBMIT_BYTES

    async def work(fn: Callable[[], Any]) -> Any:
        # decoding and planning 15 MB in a worker thread keeps the loop serving others
        return fn() if small else await anyio.to_thread.run_sync(fn)

    def decode() -> tuple[SubmitParams, str]:
        p = params.decode(SubmitParams)
        if p.token is None:
            return p, ""
        if not 1 <= len(p.token) <= 200:
            raise InvalidParams('"token" must be 1 to 200 characters')
        return p, submit_digest(p)

    def plan(p: SubmitParams) -> SubmitPlan:
        if (p.job is None) == (p.jobs is None):
            raise InvalidParams('give exactly one of "job" or "jobs"')
        specs = [p.job] if p.job is not None else list(p.jobs or [])
        if not specs:
            raise InvalidParams('"jobs" is empty')
        return plan_new_jobs(specs)

    with contextlib.nullcontext() if small else gc_paused():
        p, digest = await work(decode)
        if p.token is not None and (before := await ctx.store.submission(p.token)):
            # sent again (its reply was lost?): that call's ids, nothing new; checked
            # before validating, which a change of config since could now fail
            in_order = same_submission(before, digest)
            log.info("jobs_resent", count=len(in_order), first=in_order[0])
            return _submit_result(p, in_order)
        the_plan: SubmitPlan = await work(lambda: plan(p))
        key = None
        if p.token is not None:
            key = SubmitKey(token=p.token, digest=digest, order=the_plan.positions)
        if small:
            rows = build_rows(the_plan, 0, len(the_plan.specs), views, default)
            ids = await ctx.store.create_jobs(rows, key=key)
        else:
            ids = await create_in_chunks(ctx.store, the_plan, views, default, key)
    in_order = [ids[pos] for pos in the_plan.positions]
    log.info("jobs_accepted", count=len(in_order), first=in_order[0],
             seconds=round(time.perf_counter() - started, 3))  # fmt: skip
    return _submit_result(p, in_order)


def _submit_result(p: SubmitParams, in_order: list[int]) -> Any:
    if p.job is not None:
        return {"id": in_order[0], "ids": in_order}
    return {"ids": in_order}


# --- reads --------------------------------------------------------------------------------


async def job_get(session: Session, params: Params) -> Any:
    p = params.decode(IdsParams)
    if p.id is None or p.ids is not None or p.if_version is not None:
        raise InvalidParams('job.get takes "id"')
    store = session.ctx.store
    job = await store.get_job(p.id)
    return job_to_wire(job, after=await store.parents(job.id))


async def job_states(session: Session, params: Params) -> Any:
    """Where each of up to 100,000 jobs is, in one store query: what a waiter reads once
    before following the events from ``cursor`` (see PROTOCOL.md)."""
    p = params.decode(StatesParams)
    if not p.ids:
        raise InvalidParams('"ids" is empty')
    if len(p.ids) > MAX_BATCH_LIST:
        raise InvalidParams(f"at most {MAX_BATCH_LIST} ids per call")
    cursor, found = await session.ctx.store.job_states(p.ids)
    by_id = {j.id: j for j in found}
    jobs = []
    missing = []
    for jid in dict.fromkeys(p.ids):  # the caller's order, each id once
        j = by_id.get(jid)
        if j is None:
            missing.append(jid)
            continue
        jobs.append({"id": j.id, "state": j.state.value,
                     "final": is_final(j.state, attempt=j.attempt, max_attempts=j.max_attempts),
                     "exit_code": j.exit_code, "cluster": j.cluster})  # fmt: skip
    return {"jobs": jobs, "missing": missing, "cursor": cursor}


async def job_list(session: Session, params: Params) -> Any:
    p = params.decode(ListParams)
    if not 1 <= p.limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f'"limit" must be between 1 and {MAX_LIST_LIMIT}')
    states = states_of(p.state)
    filt = JobFilter(states=states, campaign=p.campaign, cluster=p.cluster, name=p.name)
    ctx = session.ctx
    if p.cluster is not None:
        # a typo is an error, not an empty page; a cluster removed from the config still
        # lists the jobs it ran
        known = set(ctx.workers) | set(ctx.settings_getter().clusters)
        if p.cluster not in known and not await ctx.store.cluster_has_jobs(p.cluster):
            raise UnknownCluster(
                f"no cluster named {p.cluster!r}", data={"clusters": sorted(known)}
            )
    jobs = await ctx.store.list_jobs(filt, before_id=p.before, limit=p.limit)
    return {
        "jobs": [job_to_wire(j) for j in jobs],
        "next": jobs[-1].id if len(jobs) == p.limit else None,
    }


# --- user actions -------------------------------------------------------------------------


def user_action(action: str) -> Handler:
    """The handler of ``job.<action>`` (cancel, hold, release, retry). Hold/release of jobs
    on a head are recorded as intents that the poller carries out there (the reply says
    ``requested_on_head``); the state follows when a poll sees it."""

    async def handle(session: Session, params: Params) -> Any:
        ids = ids_of(p := params.decode(IdsParams))
        ctx = session.ctx
        jobs, on_head = await ctx.store.act(
            action, ids, if_version=p.if_version, head_clusters=ctx.workers.keys()
        )
        for worker in ctx.workers.values():
            worker.poke()
        if on_head:
            return {"jobs": [job_to_wire(j) for j in jobs], "requested_on_head": True}
        return {"jobs": [job_to_wire(j) for j in jobs]}

    return handle
