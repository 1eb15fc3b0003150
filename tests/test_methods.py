"""The method handlers (``schedulerd/methods/``) driven directly: a real store, a fake
session in place of a socket connection."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest

from schedulerd.errors import InvalidParams, InvalidSpec, JobNotFound, ShuttingDown
from schedulerd.methods import HANDLERS
from schedulerd.methods.base import ControlContext
from schedulerd.methods.submit import SMALL_SUBMIT_BYTES, SUBMIT_CHUNK, gc_paused
from schedulerd.rpc import Params
from schedulerd.state.store import open_store
from tests.harness import local_settings

DOMAINS = {"daemon": "daemon", "job": "jobs", "clusters": "clusters", "events": "events"}


class FakeSession:
    """What a handler sees of its connection; background tasks run in the test's group."""

    def __init__(self, ctx: ControlContext, tg: anyio.abc.TaskGroup) -> None:
        self.ctx = ctx
        self.subscription: anyio.CancelScope | None = None
        self.after_reply: Callable[[], None] | None = None
        self.sent: list[dict[str, Any]] = []
        self.more_sent = anyio.Event()  # set by the next send
        self.background: list[str] = []
        self.tg = tg

    async def send(self, line: bytes) -> None:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        self.sent.append(json.loads(line))
        self.more_sent.set()
        self.more_sent = anyio.Event()

    def start_background(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        self.background.append(what)
        self.tg.start_soon(task)

    async def call(self, method: str, params: Any = None) -> Any:
        raw = None if params is None else msgspec.json.encode(params)
        return await HANDLERS[method](self, Params(raw))


@asynccontextmanager
async def session(tmp_path: Path) -> AsyncIterator[FakeSession]:
    settings = local_settings(tmp_path)
    store = await open_store(settings.database_path)
    stops: list[str] = []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            ctx = ControlContext(store=store, workers={}, settings_getter=lambda: settings,
                                 request_shutdown=lambda: stops.append("stop"))  # fmt: skip
            yield FakeSession(ctx, tg)
            await store.close()  # the writer drains and returns
            tg.cancel_scope.cancel()  # and a subscription's stream ends
    finally:
        await store.aclose_connections()


def test_each_method_lives_in_its_domains_module() -> None:
    for name, handler in HANDLERS.items():
        domain, _, verb = name.partition(".")
        assert verb and domain in DOMAINS, name
        assert handler.__module__ == f"schedulerd.methods.{DOMAINS[domain]}", name


async def test_shutdown_answers_first_and_stops_after_the_reply(tmp_path: Path) -> None:
    async with session(tmp_path) as s:
        assert await s.call("daemon.shutdown") == {"stopping": True}
        assert s.after_reply is s.ctx.request_shutdown  # the server calls it after the reply
        with pytest.raises(InvalidParams, match="takes no params"):
            await s.call("daemon.ping", {"x": 1})


async def test_submit_get_list_and_cancel_through_the_handlers(tmp_path: Path) -> None:
    async with session(tmp_path) as s:
        got = await s.call("job.submit", {"jobs": [{"argv": ["true"], "name": "b", "after": ["a"]},
                                                   {"argv": ["true"], "name": "a"}]})  # fmt: skip
        # the parent is stored first; the ids come back in the caller's order
        assert got == {"ids": [2, 1]}
        job = await s.call("job.get", {"id": 2})
        assert (job["name"], job["after"], job["final"]) == ("b", [1], False)
        page = await s.call("job.list", {"limit": 1})
        assert [j["id"] for j in page["jobs"]] == [2] and page["next"] == 2
        cancelled = await s.call("job.cancel", {"ids": [1, 2]})
        assert [(j["id"], j["state"], j["final"]) for j in cancelled["jobs"]] == [
            (1, "cancelled", True), (2, "cancelled", True)]  # fmt: skip
        with pytest.raises(JobNotFound):
            await s.call("job.get", {"id": 3})
        with pytest.raises(InvalidParams, match='"ids" lists a job twice'):
            await s.call("job.retry", {"ids": [1, 1]})
        s.ctx.stopping = True
        with pytest.raises(ShuttingDown):
            await s.call("job.submit", {"job": {"argv": ["true"]}})


async def test_a_big_call_is_built_in_chunks_and_refused_whole(tmp_path: Path) -> None:
    """Over SMALL_SUBMIT_BYTES the rows are built chunk by chunk beside the store's
    inserts; a bad job in a later chunk still leaves nothing stored."""
    count = 3 * SUBMIT_CHUNK
    padding = "x" * (SMALL_SUBMIT_BYTES // count + 1)
    jobs: list[dict[str, Any]] = [{"argv": ["echo", padding]} for _ in range(count)]
    async with session(tmp_path) as s:
        bad = [*jobs[:-1], {"argv": ["echo"], "cpus": 0}]
        with pytest.raises(InvalidSpec, match=rf"jobs\[{count - 1}\]: cpus must be positive"):
            await s.call("job.submit", {"jobs": bad})
        assert await s.ctx.store.count_by_state() == {}
        assert gc.isenabled()
        got = await s.call("job.submit", {"jobs": jobs, "token": "t"})
        assert got["ids"] == list(range(1, count + 1))
        assert await s.call("job.submit", {"jobs": jobs, "token": "t"}) == got  # resent


def test_gc_stays_off_until_the_last_overlapping_pause_ends() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # whoever turned it off still owns it
    finally:
        gc.enable()


async def test_a_subscription_streams_from_the_connection_and_stops_on_unsubscribe(
    tmp_path: Path,
) -> None:
    async with session(tmp_path) as s:
        first = await s.call("job.submit", {"job": {"argv": ["true"]}})
        sub = await s.call("events.subscribe", {"ids": [first["id"]]})
        assert sub["subscribed"] is True and s.background == ["subscription"]
        other = await s.call("job.submit", {"job": {"argv": ["true"]}})
        await s.call("job.cancel", {"id": first["id"]})
        with anyio.fail_after(30):
            while not any(n["params"]["to"] == "cancelled" for n in s.sent):
                await s.more_sent.wait()
        assert {n["method"] for n in s.sent} == {"events.event"}
        assert {n["params"]["job_id"] for n in s.sent} == {first["id"]}  # not the other job
        assert other["id"] != first["id"]
        assert await s.call("events.unsubscribe") == {"unsubscribed": True}
        assert await s.call("events.unsubscribe") == {"unsubscribed": False}
