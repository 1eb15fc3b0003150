"""``clusters.*``: list, check, drain, resume."""

from __future__ import annotations

from typing import Any

import msgspec

from schedulerd.errors import UnknownCluster
from schedulerd.methods.base import ControlContext, Session
from schedulerd.rpc import Params
from schedulerd.worker.cluster import ClusterWorker


class ClusterParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def _worker(ctx: ControlContext, params: Params) -> ClusterWorker:
    p = params.decode(ClusterParams)
    worker = ctx.workers.get(p.name)
    if worker is None:
        known = sorted(ctx.workers)
        raise UnknownCluster(f"no cluster named {p.name!r}", data={"clusters": known})
    return worker


async def clusters_list(session: Session, params: Params) -> Any:
    params.expect_none()
    return {"clusters": [w.status() for w in session.ctx.workers.values()]}


async def clusters_check(session: Session, params: Params) -> Any:
    worker = _worker(session.ctx, params)
    results = await worker.driver.check()
    return {
        "name": worker.name,
        "ok": all(r.ok for r in results),
        "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
    }


async def clusters_drain(session: Session, params: Params) -> Any:
    worker = _worker(session.ctx, params)
    await worker.set_drained(True)
    return worker.status()


async def clusters_resume(session: Session, params: Params) -> Any:
    worker = _worker(session.ctx, params)
    await worker.set_drained(False)
    return worker.status()
