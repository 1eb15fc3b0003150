"""The ``job.submit`` pipeline's performance plumbing: what lets one call of 100,000 jobs
be accepted at tens of thousands of jobs a second without stalling other clients.

* :func:`gc_paused` keeps the cyclic collector off while a big call builds its rows;
* :func:`create_in_chunks` validates and builds the rows chunk by chunk on the loop
  while the store inserts the previous chunk in its thread;
* :func:`submit_digest` identifies a call's params for its idempotency token.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator, Sequence

import anyio
import msgspec

from schedulerd.errors import SchedulerdError
from schedulerd.jobspec import ClusterView, JobSpecIn, SubmitPlan, build_rows
from schedulerd.state.models import NewJob, SubmitKey
from schedulerd.state.store import Store

SUBMIT_CHUNK = 2_000
#: params up to this size are decoded, planned and stored in one go on the loop
SMALL_SUBMIT_BYTES = 256 * 1024


class SubmitParams(msgspec.Struct, forbid_unknown_fields=True):
    job: JobSpecIn | None = None
    jobs: list[JobSpecIn] | None = None
    token: str | None = None  # idempotency key: the same token again creates nothing new


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


def submit_digest(p: SubmitParams) -> str:
    """What identifies a call's params apart from its token: the same token with another
    digest is another submission (keys sorted, so the order of ``env`` does not count)."""
    canonical = msgspec.json.encode(msgspec.structs.replace(p, token=None), order="sorted")
    return hashlib.sha256(canonical).hexdigest()


async def create_in_chunks(
    store: Store,
    the_plan: SubmitPlan,
    views: dict[str, ClusterView],
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
                    rows = build_rows(the_plan, start, start + SUBMIT_CHUNK, views, default)
                    await send.send(rows)
            except SchedulerdError as exc:
                with contextlib.suppress(anyio.BrokenResourceError):
                    await send.send(exc)
            except anyio.BrokenResourceError:
                pass  # the store gave up (unknown parent, shutting down)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            try:
                ids = await store.create_jobs_from(
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
