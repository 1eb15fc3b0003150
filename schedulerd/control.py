"""The control server: JSON-RPC 2.0 over a Unix socket, one JSON object per line.

Each connection is a task. Peers are checked with SO_PEERCRED (the daemon's user, root,
or a member of the configured group). A line longer than the frame limit is discarded
up to its newline and answered with an error; the connection stays usable. Replies and
``events.subscribe`` notifications share the connection under one send lock.
"""

from __future__ import annotations

import contextlib
import gc
import grp
import hashlib
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
import structlog
from anyio.abc import SocketAttribute

from schedulerd import __version__
from schedulerd import protocol as P
from schedulerd.errors import (
    ConfigError,
    Conflict,
    InvalidParams,
    InvalidTransition,
    JobNotFound,
    MessageTooLarge,
    MethodNotFound,
    PermissionDenied,
    SchedulerdError,
    ShuttingDown,
    TransportError,
    UnknownCluster,
)
from schedulerd.worker.cluster import ClusterWorker
from schedulerd.state.machine import State, is_final
from schedulerd.state.store import Job, JobFilter, NewJob, Store, SubmitKey, same_submission

log = structlog.get_logger(__name__)

READ_CHUNK = 256 * 1024
SUBMIT_CHUNK = 2_000
MAX_LIST_LIMIT = 10_000
SUBSCRIBE_SQL_IDS = 500  # events.subscribe filters larger id sets in Python


@dataclass
class ControlContext:
    """What the handlers need from the daemon (wired in daemon.py)."""

    store: Store
    workers: dict[str, ClusterWorker]
    settings_getter: Callable[[], Any]
    request_shutdown: Callable[[], None]
    started_at: float = field(default_factory=time.time)
    stopping: bool = False


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(pid: int, uid: int, gid: int, group: str | None) -> bool:
    if uid in (0, os.getuid()):
        return True
    if group is None:
        return False
    try:
        wanted = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if gid == wanted:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return str(wanted) in line.split()[1:]
    except OSError:
        return False
    return False


#: how long one write may wait for a peer that does not read (a stuck subscriber)
WRITE_TIMEOUT = 30.0


class PeerGone(Exception):
    """The peer hung up, reset the connection or stopped reading: the connection ends."""


class BufferBudget:
    """Bytes of unfinished request lines held across all connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        self.used -= n


class Connection:
    """One client. Its failures (peer gone, reset, write timeout, a bug in a handler's
    reply) end this connection only: nothing a client does or fails to do may end the
    daemon (``daemon.shutdown`` and signals do)."""

    def __init__(
        self,
        ctx: ControlContext,
        stream: anyio.abc.ByteStream,
        max_bytes: int,
        budget: BufferBudget | None = None,
        write_timeout: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.max_bytes = max_bytes
        self.budget = budget or BufferBudget(max(max_bytes, 1))
        self.write_timeout = WRITE_TIMEOUT if write_timeout is None else write_timeout
        self.send_lock = anyio.Lock()
        self.subscription: anyio.CancelScope | None = None
        self.after_reply: Callable[[], None] | None = None

    async def send(self, line: bytes) -> None:
        """Write one line; PeerGone when the peer cannot take it."""
        async with self.send_lock:
            try:
                with anyio.fail_after(self.write_timeout):
                    await self.stream.send(line)
            except TimeoutError as exc:
                raise PeerGone(f"peer read nothing for {self.write_timeout:g}s") from exc
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise PeerGone(str(exc) or type(exc).__name__) from exc

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                try:
                    await self._read_loop()
                except PeerGone as exc:
                    log.debug("peer_gone", error=str(exc))
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._release()

    def close_soon(self, why: str) -> None:
        """End this connection from one of its tasks (a subscription whose peer is gone)."""
        log.debug("peer_gone", error=why)
        self.tg.cancel_scope.cancel()

    _held = 0

    def _hold(self, n: int) -> bool:
        if not self.budget.take(n):
            return False
        self._held += n
        return True

    def _release(self) -> None:
        self.budget.give_back(self._held)
        self._held = 0

    async def _read_loop(self) -> None:
        buffer = bytearray()
        discarding: str | None = None  # why the rest of the current line is thrown away
        while True:
            try:
                chunk = await self.stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                piece = chunk[start:] if newline < 0 else chunk[start:newline]
                if discarding is None and piece:
                    if len(buffer) + len(piece) > self.max_bytes:
                        discarding = f"message longer than {self.max_bytes} bytes; it was discarded"
                    elif not self._hold(len(piece)):
                        discarding = (f"the daemon holds {self.budget.limit} bytes of unfinished "
                                      "messages from all clients; this message was discarded, "
                                      "send it again later")  # fmt: skip
                    else:
                        buffer += piece
                    if discarding is not None:
                        buffer = bytearray()
                        self._release()
                if newline < 0:
                    break
                if discarding is not None:
                    reason, discarding = discarding, None
                    await self.send(P.error_line(None, MessageTooLarge(reason)))
                elif buffer.strip():
                    line = bytes(buffer)
                    buffer = bytearray()
                    self._release()
                    await self._handle_line(line)
                else:
                    buffer = bytearray()
                    self._release()
                start = newline + 1

    async def _handle_line(self, line: bytes) -> None:
        req_id: Any = None
        request: P.Request | None = None
        try:
            request = P.decode_request(line)
            req_id = request.id
            result = await self._dispatch(request)
        except SchedulerdError as exc:
            if isinstance(exc.data, dict) and "id" in exc.data and req_id is None:
                req_id = exc.data.pop("id")
                if not exc.data:
                    exc.data = None
            log.info("request_failed", code=exc.code, error=exc.message)
            if request is None or not request.is_notification:  # never answer a notification
                await self.send(P.error_line(req_id, exc))
            return
        except Exception as exc:
            log.exception("request_crashed")
            if request is None or not request.is_notification:
                await self.send(P.error_line(req_id, SchedulerdError(f"internal error: {exc}")))
            return
        if not request.is_notification:
            try:
                line = P.result_line(req_id, result)
            except Exception as exc:  # a reply we cannot encode is our bug, not the peer's
                log.exception("reply_unencodable", method=request.method)
                line = P.error_line(req_id, SchedulerdError(f"internal error: {exc}"))
            await self.send(line)
        if self.after_reply is not None:
            callback, self.after_reply = self.after_reply, None
            callback()

    async def _dispatch(self, request: P.Request) -> Any:
        handler = HANDLERS.get(request.method)
        if handler is None:
            raise MethodNotFound(
                f"unknown method {request.method!r}", data={"methods": sorted(HANDLERS)}
            )
        return await handler(self, request.params)


# --- handlers -----------------------------------------------------------------------------

Handler = Callable[[Connection, P.Params], Awaitable[Any]]


def _no_params(params: P.Params) -> None:
    if not params.is_empty():
        raise InvalidParams(f"this method takes no params, got {params.keys() or 'a non-object'}")


async def daemon_ping(conn: Connection, params: P.Params) -> Any:
    _no_params(params)
    return {"pong": True, "version": __version__, "protocol": P.PROTOCOL_VERSION}


async def daemon_info(conn: Connection, params: P.Params) -> Any:
    _no_params(params)
    ctx = conn.ctx
    settings = ctx.settings_getter()
    return {
        "version": __version__,
        "protocol": P.PROTOCOL_VERSION,
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


async def daemon_shutdown(conn: Connection, params: P.Params) -> Any:
    _no_params(params)
    conn.after_reply = conn.ctx.request_shutdown  # answer first, then stop
    return {"stopping": True}


def _cluster_views(ctx: ControlContext) -> tuple[dict[str, P.ClusterView], str]:
    from schedulerd.drivers.batch import login_relative

    settings = ctx.settings_getter()
    views = {
        name: P.ClusterView(
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


_gc_pause_depth = 0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while a big submit builds its rows.

    A 100,000-job call allocates a few million objects that all stay alive until the
    call ends, so every generation-0 collection promotes them and the older generations
    are walked again and again: it cost about half the call's time. Reference counting
    still frees everything that is not in a cycle; the collector runs when the last
    overlapping pause ends.
    """
    global _gc_pause_depth
    if _gc_pause_depth == 0 and not gc.isenabled():
        yield  # someone else (a test, an embedding program) owns the collector
        return
    _gc_pause_depth += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pause_depth -= 1
        if _gc_pause_depth == 0:
            gc.enable()


async def job_submit(conn: Connection, params: P.Params) -> Any:
    ctx = conn.ctx
    if ctx.stopping:
        raise ShuttingDown()
    views, default = _cluster_views(ctx)
    started = time.perf_counter()
    small = params.raw is None or len(params.raw) <= 256 * 1024

    async def work(fn: Callable[[], Any]) -> Any:
        # decoding and planning 15 MB in a worker thread keeps the loop serving others
        return fn() if small else await anyio.to_thread.run_sync(fn)

    def decode() -> tuple[P.SubmitParams, str]:
        p = P.convert_params(params, P.SubmitParams)
        if p.token is None:
            return p, ""
        if not 1 <= len(p.token) <= 200:
            raise InvalidParams('"token" must be 1 to 200 characters')
        return p, _submit_digest(p)

    def plan(p: P.SubmitParams) -> P.SubmitPlan:
        if (p.job is None) == (p.jobs is None):
            raise InvalidParams('give exactly one of "job" or "jobs"')
        specs = [p.job] if p.job is not None else list(p.jobs or [])
        if not specs:
            raise InvalidParams('"jobs" is empty')
        return P.plan_new_jobs(specs)

    with contextlib.nullcontext() if small else gc_paused():
        p, digest = await work(decode)
        if p.token is not None and (before := await ctx.store.submission(p.token)):
            # sent again (its reply was lost?): that call's ids, nothing new; checked
            # before validating, which a change of config since could now fail
            in_order = same_submission(before, digest)
            log.info("jobs_resent", count=len(in_order), first=in_order[0])
            return _submit_result(p, in_order)
        the_plan: P.SubmitPlan = await work(lambda: plan(p))
        key = None
        if p.token is not None:
            key = SubmitKey(token=p.token, digest=digest, order=the_plan.positions)
        if small:
            rows = P.build_rows(the_plan, 0, len(the_plan.specs), views, default)
            ids = await ctx.store.create_jobs(rows, key=key)
        else:
            ids = await _create_in_chunks(ctx, the_plan, views, default, key)
    in_order = [ids[pos] for pos in the_plan.positions]
    log.info("jobs_accepted", count=len(in_order), first=in_order[0],
             seconds=round(time.perf_counter() - started, 3))  # fmt: skip
    return _submit_result(p, in_order)


def _submit_result(p: P.SubmitParams, in_order: list[int]) -> Any:
    if p.job is not None:
        return {"id": in_order[0], "ids": in_order}
    return {"ids": in_order}


def _submit_digest(p: P.SubmitParams) -> str:
    """What identifies a call's params apart from its token: the same token with another
    digest is another submission (keys sorted, so the order of ``env`` does not count)."""
    canonical = msgspec.json.encode(msgspec.structs.replace(p, token=None), order="sorted")
    return hashlib.sha256(canonical).hexdigest()


async def _create_in_chunks(
    ctx: ControlContext,
    the_plan: P.SubmitPlan,
    views: dict[str, P.ClusterView],
    default: str,
    key: SubmitKey | None,
) -> list[int]:
    """Store a big call (a 100,000-job campaign): the rows are validated and built here in
    chunks, on the loop, while the store's thread inserts the previous chunk inside SQLite
    (off the GIL, so the two overlap). Other clients and the pollers are served between
    chunks. Nothing is committed unless every chunk is valid."""
    count = len(the_plan.specs)
    send, receive = anyio.create_memory_object_stream[Sequence[NewJob] | BaseException](1)

    async def produce() -> None:
        async with send:
            try:
                for start in range(0, count, SUBMIT_CHUNK):
                    await send.send(P.build_rows(the_plan, start, start + SUBMIT_CHUNK, views, default))
            except SchedulerdError as exc:
                with contextlib.suppress(anyio.BrokenResourceError):
                    await send.send(exc)
            except anyio.BrokenResourceError:
                pass  # the store gave up (unknown parent, shutting down)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            try:
                ids = await ctx.store.create_jobs_from(
                    count, the_plan.existing_parents, receive, key=key
                )
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the client hears the store's error itself ("database or disk is full", an
        # unknown parent, ...), not "unhandled errors in a TaskGroup"
        sole = _sole_error(group)
        if sole is group:
            raise
        raise sole from None  # its own traceback still says where it came from
    return ids


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside (nested) exception groups, or the group if there are more."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner


async def job_get(conn: Connection, params: P.Params) -> Any:
    p = P.convert_params(params, P.IdsParams)
    if p.id is None or p.ids is not None or p.if_version is not None:
        raise InvalidParams('job.get takes "id"')
    job = await conn.ctx.store.get_job(p.id)
    return P.job_to_wire(job, after=await conn.ctx.store.parents(job.id))


async def job_states(conn: Connection, params: P.Params) -> Any:
    """Where each of up to 100,000 jobs is, in one store query: what a waiter reads once
    before following the events from ``cursor`` (see PROTOCOL.md)."""
    p = P.convert_params(params, P.StatesParams)
    if not p.ids:
        raise InvalidParams('"ids" is empty')
    if len(p.ids) > P.MAX_BATCH_LIST:
        raise InvalidParams(f"at most {P.MAX_BATCH_LIST} ids per call")
    cursor, found = await conn.ctx.store.job_states(p.ids)
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


async def job_list(conn: Connection, params: P.Params) -> Any:
    p = P.convert_params(params, P.ListParams)
    if not 1 <= p.limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f'"limit" must be between 1 and {MAX_LIST_LIMIT}')
    filt = JobFilter(states=P.states_of(p.state), campaign=p.campaign, cluster=p.cluster, name=p.name)
    if p.cluster is not None:
        # a typo is an error, not an empty page; a cluster removed from the config still
        # lists the jobs it ran
        known = set(conn.ctx.workers) | set(conn.ctx.settings_getter().clusters)
        if p.cluster not in known and not await conn.ctx.store.cluster_has_jobs(p.cluster):
            raise UnknownCluster(f"no cluster named {p.cluster!r}", data={"clusters": sorted(known)})
    jobs = await conn.ctx.store.list_jobs(filt, before_id=p.before, limit=p.limit)
    return {
        "jobs": [P.job_to_wire(j) for j in jobs],
        "next": jobs[-1].id if len(jobs) == p.limit else None,
    }


def _action(action: str) -> Handler:
    async def handle(conn: Connection, params: P.Params) -> Any:
        p = P.convert_params(params, P.IdsParams)
        ids = P.ids_of(p)
        store = conn.ctx.store
        if action in ("hold", "release"):
            on_head = await _on_head(conn.ctx, action, ids, p.if_version)
            if on_head:
                return await _hold_on_head(conn.ctx, action, ids, on_head)
        jobs = await store.user_action(action, ids, if_version=p.if_version)
        for worker in conn.ctx.workers.values():
            worker.poke()
        return {"jobs": [P.job_to_wire(j) for j in jobs]}

    return handle


async def _on_head(ctx: ControlContext, action: str, ids: list[int], if_version: int | None) -> dict[str, list[Job]]:
    """Jobs of ``ids`` that the batch system must hold/release, by cluster. Mixing them
    with jobs not yet submitted in one call is refused (nothing changes)."""
    jobs = await ctx.store.get_jobs(ids)
    missing = [i for i in ids if i not in jobs]
    if missing:
        raise JobNotFound(f"no job with id {missing[0]}", data={"missing": missing[:100]})
    wanted = State.QUEUED if action == "hold" else State.HELD
    by_cluster: dict[str, list[Job]] = {}
    for job in jobs.values():
        if job.native_id is not None and job.state in (State.QUEUED, State.RUNNING, State.HELD):
            if job.state is not wanted:
                raise InvalidTransition(f"job {job.id}: cannot {action} a job that is {job.state}")
            if if_version is not None and job.version != if_version:
                raise Conflict(f"job {job.id} is at version {job.version}, not {if_version}")
            by_cluster.setdefault(job.cluster, []).append(job)
    if by_cluster and sum(len(v) for v in by_cluster.values()) != len(ids):
        raise InvalidParams(f"{action} jobs on a head separately from jobs not yet submitted")
    return by_cluster


async def _hold_on_head(
    ctx: ControlContext, action: str, ids: list[int], by_cluster: dict[str, list[Job]]
) -> Any:
    """Ask the batch system; the poller records ``held``/``queued`` once the head says so."""
    for cluster, jobs in by_cluster.items():
        worker = ctx.workers.get(cluster)
        if worker is None:
            raise UnknownCluster(f"cluster {cluster!r} is not configured any more")
        natives = [j.native_id for j in jobs if j.native_id]
        try:
            with anyio.fail_after(worker.config.command_timeout + 5):
                if action == "hold":
                    await worker.driver.hold(natives)
                else:
                    await worker.driver.release(natives)
        except TimeoutError as exc:
            raise TransportError(f"{cluster}: {action} timed out") from exc
        worker.poke()
    current = await ctx.store.get_jobs(ids)
    return {"jobs": [P.job_to_wire(current[i]) for i in ids], "requested_on_head": True}


class ClusterParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def _worker(ctx: ControlContext, params: P.Params) -> ClusterWorker:
    p = P.convert_params(params, ClusterParams)
    worker = ctx.workers.get(p.name)
    if worker is None:
        raise UnknownCluster(f"no cluster named {p.name!r}", data={"clusters": sorted(ctx.workers)})
    return worker


async def clusters_list(conn: Connection, params: P.Params) -> Any:
    _no_params(params)
    return {"clusters": [w.status() for w in conn.ctx.workers.values()]}


async def clusters_check(conn: Connection, params: P.Params) -> Any:
    worker = _worker(conn.ctx, params)
    results = await worker.driver.check()
    return {
        "name": worker.name,
        "ok": all(r.ok for r in results),
        "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
    }


async def clusters_drain(conn: Connection, params: P.Params) -> Any:
    worker = _worker(conn.ctx, params)
    await worker.set_drained(True)
    return worker.status()


async def clusters_resume(conn: Connection, params: P.Params) -> Any:
    worker = _worker(conn.ctx, params)
    await worker.set_drained(False)
    return worker.status()


async def events_list(conn: Connection, params: P.Params) -> Any:
    p = P.convert_params(params, P.EventsParams)
    if not 1 <= p.limit <= MAX_LIST_LIMIT:
        raise InvalidParams(f'"limit" must be between 1 and {MAX_LIST_LIMIT}')
    if p.ids is not None and len(p.ids) > P.MAX_BATCH_LIST:
        raise InvalidParams(f'at most {P.MAX_BATCH_LIST} ids per call')
    since = p.since or 0
    events = await conn.ctx.store.events_since(since, limit=p.limit, job_ids=p.ids)
    return {
        "events": [P.event_to_wire(e) for e in events],
        "cursor": events[-1].id if events else since,
    }


async def events_subscribe(conn: Connection, params: P.Params) -> Any:
    p = P.convert_params(params, P.EventsParams)
    store = conn.ctx.store
    cursor = p.since if p.since is not None else await store.last_event_id()
    if conn.subscription is not None:
        conn.subscription.cancel()
    scope = anyio.CancelScope()
    conn.subscription = scope
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
            try:
                while True:
                    changed = store.changed
                    events = await store.events_since(cursor, limit=1000, job_ids=ids)
                    for event in events:
                        if wanted is None or event.job_id in wanted:
                            await conn.send(P.notification_line("events.event", P.event_to_wire(event)))
                        cursor = event.id
                    if not events:
                        await changed.wait()
            except PeerGone as exc:
                conn.close_soon(str(exc))
            except Exception:
                log.exception("subscription_failed")
                conn.close_soon("subscription failed")

    # the reply goes out before the first notification: start after returning
    async def start_later() -> None:
        await anyio.lowlevel.checkpoint()
        await stream()

    conn.tg.start_soon(start_later)
    return {"subscribed": True, "cursor": cursor}


async def events_unsubscribe(conn: Connection, params: P.Params) -> Any:
    _no_params(params)
    if conn.subscription is not None:
        conn.subscription.cancel()
        conn.subscription = None
        return {"unsubscribed": True}
    return {"unsubscribed": False}


HANDLERS: dict[str, Handler] = {
    "daemon.ping": daemon_ping,
    "daemon.info": daemon_info,
    "daemon.shutdown": daemon_shutdown,
    "job.submit": job_submit,
    "job.get": job_get,
    "job.states": job_states,
    "job.list": job_list,
    "job.cancel": _action("cancel"),
    "job.hold": _action("hold"),
    "job.release": _action("release"),
    "job.retry": _action("retry"),
    "clusters.list": clusters_list,
    "clusters.check": clusters_check,
    "clusters.drain": clusters_drain,
    "clusters.resume": clusters_resume,
    "events.list": events_list,
    "events.subscribe": events_subscribe,
    "events.unsubscribe": events_unsubscribe,
}


async def serve_control(
    ctx: ControlContext,
    path: Path,
    *,
    group: str | None,
    max_bytes: int,
    max_buffered: int | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the socket (0600, or 0660 with a group), then serve until cancelled."""
    budget = BufferBudget(max_buffered if max_buffered is not None else max(max_bytes, 256 << 20))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if await stale_socket_at(path):
        path.unlink()
    old_umask = os.umask(0o177 if group is None else 0o117)
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old_umask)
    if group is not None:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as exc:
            await listener.aclose()
            raise SchedulerdError(f"cannot give the socket to group {group!r}: {exc}") from exc
        path.chmod(0o660)
    else:
        path.chmod(0o600)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            pid, uid, gid = peer_credentials(raw)
            if not peer_allowed(pid, uid, gid, group):
                log.warning("peer_refused", uid=uid, pid=pid)
                try:
                    await stream.send(P.error_line(None, PermissionDenied(
                        f"uid {uid} may not use this daemon")))  # fmt: skip
                    # drain what the peer already sent, so closing does not reset the
                    # connection before it has read why
                    await stream.send_eof()
                    with anyio.move_on_after(1):
                        while await stream.receive(65536):
                            pass
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                    pass
                return
            await Connection(ctx, stream, max_bytes, budget).serve()

    async def handle_safely(stream: anyio.abc.SocketStream) -> None:
        # the listener's task group is the daemon's: whatever goes wrong with one client
        # (a bug included) is logged and ends that client's connection only
        try:
            await handle(stream)
        except Exception:
            log.exception("connection_failed")

    try:
        async with listener:
            task_status.started()
            await listener.serve(handle_safely)
    finally:
        path.unlink(missing_ok=True)


def check_socket_path(path: Path) -> bool:
    """True if a socket is at ``path``, False if nothing is; anything else (a regular
    file, a directory, a symlink, ...) is refused and left untouched: only a stale socket
    may be removed to bind a new one."""
    size = len(os.fsencode(path))
    if size > 107:  # sockaddr_un.sun_path holds 108 bytes with the final NUL
        raise ConfigError(
            f"socket path {path} is too long for a Unix socket ({size} bytes, at most 107):"
            " choose a shorter one (--socket)"
        )
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"socket path {path}: {exc.strerror or exc}") from exc
    if stat.S_ISSOCK(mode):
        return True
    kinds = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory",
             stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO"}  # fmt: skip
    kind = kinds.get(stat.S_IFMT(mode), "a device or other special file")
    raise ConfigError(
        f"socket path {path} is {kind}, not a socket; refusing to replace it:"
        " remove it yourself or choose another socket path (--socket)"
    )


async def stale_socket_at(path: Path) -> bool:
    """True if a dead daemon's socket is at ``path`` (remove it to bind a new one), False
    if nothing is there; a live socket, or anything that is not a socket, is refused."""
    if not check_socket_path(path):
        return False
    if await _socket_alive(path):
        raise SchedulerdError(
            f"another daemon is listening on {path}: stop it (schedctl shutdown) or choose"
            " another socket path (--socket)"
        )
    return True


async def _socket_alive(path: Path) -> bool:
    try:
        with anyio.fail_after(2):
            stream = await anyio.connect_unix(path)
    except (OSError, TimeoutError):
        return False
    await stream.aclose()
    return True
