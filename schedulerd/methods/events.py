"""``events.*``: the event log (list) and its live stream on a connection (subscribe,
unsubscribe)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from schedulerd.errors import InvalidParams
from schedulerd.methods.base import MAX_BATCH_LIST, MAX_LIST_LIMIT, Session
from schedulerd.rpc import Int64, Params, notification_line
from schedulerd.state.models import Event

SUBSCRIBE_SQL_IDS = 500  # events.subscribe filters larger id sets in Python


class EventsParams(msgspec.Struct, forbid_unknown_fields=True):
    since: Int64 | None = None
    limit: Int64 = 1000
    ids: list[Int64] | None = None


def event_to_wire(event: Event) -> dict[str, Any]:
    return {
        "cursor": event.id,
        "job_id": event.job_id,
        "at": event.at,
        "from": None if event.from_state is None else event.from_state.value,
        "to": event.to_state.value,
        "reason": event.reason,
        "attempt": event.attempt,
        "native_id": event.native_id,
        "version": event.version,
    }


async def events_list(session: Session, params: Params) -> Any:
    p = params.decode(EventsParams)
    if not 1 <= p.limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f'"limit" must be between 1 and {MAX_LIST_LIMIT}')
    if p.ids is not None and len(p.ids) > MAX_BATCH_LIST:
        raise InvalidParams(f"at most {MAX_BATCH_LIST} ids per call")
    since = p.since or 0
    events = await session.ctx.store.events_since(since, limit=p.limit, job_ids=p.ids)
    return {
        "events": [event_to_wire(e) for e in events],
        "cursor": events[-1].id if events else since,
    }


async def events_subscribe(session: Session, params: Params) -> Any:
    p = params.decode(EventsParams)
    store = session.ctx.store
    cursor = p.since if p.since is not None else await store.last_event_id()
    if session.subscription is not None:
        session.subscription.cancel()
    scope = anyio.CancelScope()
    session.subscription = scope
    ids = list(p.ids) if p.ids else None
    # A big set (a campaign's `schedctl wait`) is filtered here, not in SQL: an IN list
    # costs SQLite one index probe per id after every commit (and more than 32,766 ids
    # are more variables than a statement takes); the log since the cursor is short.
    wanted = frozenset(ids) if ids is not None and len(ids) > SUBSCRIBE_SQL_IDS else None
    if wanted is not None:
        ids = None

    async def stream() -> None:
        nonlocal cursor
        with scope:
            while True:
                changed = store.changed
                events = await store.events_since(cursor, limit=1000, job_ids=ids)
                for event in events:
                    if wanted is None or event.job_id in wanted:
                        note = notification_line("events.event", event_to_wire(event))
                        await session.send(note)
                    cursor = event.id
                if not events:
                    await changed.wait()

    session.start_background("subscription", stream)
    return {"subscribed": True, "cursor": cursor}


async def events_unsubscribe(session: Session, params: Params) -> Any:
    params.expect_none()
    if session.subscription is not None:
        session.subscription.cancel()
        session.subscription = None
        return {"unsubscribed": True}
    return {"unsubscribed": False}
