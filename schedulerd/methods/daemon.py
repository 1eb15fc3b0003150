"""``daemon.*``: ping, info, shutdown."""

from __future__ import annotations

import os
import time
from typing import Any

from schedulerd import __version__
from schedulerd.methods.base import Session
from schedulerd.rpc import PROTOCOL_VERSION, Params


async def daemon_ping(session: Session, params: Params) -> Any:
    params.expect_none()
    return {"pong": True, "version": __version__, "protocol": PROTOCOL_VERSION}


async def daemon_info(session: Session, params: Params) -> Any:
    params.expect_none()
    ctx = session.ctx
    settings = ctx.settings_getter()
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "uptime": time.time() - ctx.started_at,
        "state_dir": str(settings.state_dir),
        "socket": str(settings.socket_path),
        "database": str(settings.database_path),
        "config": None if settings.config_path is None else str(settings.config_path),
        "max_active": settings.max_active,
        "clusters": [w.status() for w in ctx.workers.values()],
        "jobs": await ctx.store.count_by_state(),
        "last_event": await ctx.store.last_event_id(),
    }


async def daemon_shutdown(session: Session, params: Params) -> Any:
    params.expect_none()
    session.after_reply = session.ctx.request_shutdown  # answer first, then stop
    return {"stopping": True}
