"""Invariant 7: bad input gets a clear, specific error and changes nothing.

Every case runs against a daemon holding a small, settled world (a completed job, a
running one, a pending child and a held child), sends one bad line, and checks:

* the exact error code (and the reply's id),
* a message that names the problem,
* that ``job.list`` and ``events.list`` are exactly what they were (no job created, no
  event written, no state changed — all or nothing for multi-job calls),
* that the same connection still answers ``daemon.ping``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from schedulerd.client import AsyncClient
from schedulerd.config import Settings
from schedulerd.control import peer_allowed
from tests.harness import DaemonHandle, local_settings, running_daemon, wait_terminal

MAX_BYTES = 4096


def small_limit_settings(tmp_path: Path, socket_path: Path | None = None) -> Settings:
    return local_settings(tmp_path, top=f"max_message_bytes = {MAX_BYTES}", socket=socket_path)


@dataclass
class World:
    daemon: DaemonHandle
    client: AsyncClient
    done: int  # completed
    sleeper: int  # running (sleep 30)
    waiting: int  # pending, after sleeper
    held: int  # held (version 2), after sleeper


@contextlib.asynccontextmanager
async def settled_world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_daemon(small_limit_settings(tmp_path)) as d:
        c = await d.client()
        try:
            done = (await c.call("job.submit", {"job": {"name": "done", "argv": ["true"]}}))["id"]
            await wait_terminal(c, [done])
            sleeper = (
                await c.call("job.submit", {"job": {"name": "sleeper", "argv": ["sleep", "30"]}})
            )["id"]
            with anyio.fail_after(20):
                while (await c.call("job.get", {"id": sleeper}))["state"] != "running":
                    await anyio.sleep(0.05)
            waiting = (await c.call("job.submit", {"job": {"argv": ["true"], "after": [sleeper]}}))[
                "id"
            ]
            held = (await c.call("job.submit", {"job": {"argv": ["true"], "after": [sleeper]}}))[
                "id"
            ]
            await c.call("job.hold", {"id": held})
            world = World(d, c, done, sleeper, waiting, held)
            states = {j["id"]: j["state"] for j in (await c.call("job.list"))["jobs"]}
            assert states == {
                done: "completed",
                sleeper: "running",
                waiting: "pending",
                held: "held",
            }
            yield world
        finally:
            with anyio.CancelScope(shield=True):
                # don't leave a detached `sleep 30` behind
                with contextlib.suppress(Exception):
                    await c.call("job.cancel", {"id": sleeper})
                await c.aclose()


async def snapshot(c: AsyncClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    jobs = (await c.call("job.list", {"limit": 10000}))["jobs"]
    events = (await c.call("events.list", {"limit": 10000}))["events"]
    return jobs, events


async def exchange(c: AsyncClient, raw: bytes) -> dict[str, Any]:
    await c.send_raw(raw)
    return await c.read_message(10)


async def assert_refused_and_unchanged(
    world: World, raw: bytes, code: int, message: str, *, reply_id: Any = 1
) -> dict[str, Any]:
    c = world.client
    before = await snapshot(c)
    reply = await exchange(c, raw)
    assert "error" in reply, reply
    assert reply["error"]["code"] == code, reply
    assert re.search(message, reply["error"]["message"]), reply["error"]["message"]
    assert reply["id"] == reply_id, reply
    assert await snapshot(c) == before, "a refused request changed jobs or events"
    pong = await c.call("daemon.ping")
    assert pong["pong"] is True
    return reply


def rpc(method: str, params: Any = None, req_id: Any = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode() + b"\n"


def submit(job: dict[str, Any]) -> bytes:
    return rpc("job.submit", {"job": job})


def submit_many(jobs: list[dict[str, Any]]) -> bytes:
    return rpc("job.submit", {"jobs": jobs})


# --- framing and JSON-RPC ----------------------------------------------------------------

FRAMING = [
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"\n',
        -32700,
        "malformed JSON",
        None,
        id="truncated-json",
    ),
    pytest.param(b"{not json at all}\n", -32700, "malformed JSON", None, id="garbage"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"daemon.p\xff\xfeing"}\n',
        -32700,
        "malformed JSON",
        None,
        id="invalid-utf8",
    ),
    pytest.param(b'"hello"\n', -32600, "JSON object", None, id="string"),
    pytest.param(b"42\n", -32600, "JSON object", None, id="number"),
    pytest.param(b"null\n", -32600, "JSON object", None, id="null"),
    pytest.param(
        b'[{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}]\n',
        -32600,
        "batch",
        None,
        id="batch-array",
    ),
    pytest.param(b'{"id":1,"method":"daemon.ping"}\n', -32600, "jsonrpc", 1, id="missing-jsonrpc"),
    pytest.param(
        b'{"jsonrpc":"1.0","id":1,"method":"daemon.ping"}\n',
        -32600,
        "jsonrpc",
        1,
        id="wrong-jsonrpc",
    ),
    pytest.param(b'{"jsonrpc":"2.0","id":1}\n', -32600, "method", 1, id="missing-method"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":7}\n', -32600, "method", 1, id="method-not-string"
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1.5,"method":"daemon.ping"}\n', -32600, '"id"', None, id="float-id"
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":true,"method":"daemon.ping"}\n', -32600, '"id"', None, id="bool-id"
    ),
    pytest.param(rpc("job.frobnicate"), -32601, "job.frobnicate", 1, id="unknown-method"),
    pytest.param(
        rpc("daemon.ping", [1]), -32602, "params must be an object", 1, id="positional-params"
    ),
    pytest.param(
        rpc("daemon.ping", {"verbose": True}), -32602, "verbose", 1, id="ping-takes-no-params"
    ),
    # these three were answered -32603 (internal error), reserved for our bugs
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"job.submit","params":{"job":{"argv":["\xed\xa0\x80"]}}}\n',
        -32700,
        "malformed JSON",
        1,
        id="surrogate-bytes-in-params",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"job.list","params":{"cluster":"\xed\xa0\x80"}}\n',
        -32700,
        "malformed JSON",
        1,
        id="surrogate-bytes-in-list-param",
    ),
    pytest.param(b"[" * 3000 + b"\n", -32700, "nested deeper", None, id="deep-nesting"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"job.get","params":{"x":' + b"[" * 3000 + b"}}\n",
        -32700,
        "nested deeper",
        None,
        id="deep-nesting-in-params",
    ),
    pytest.param(
        rpc("job.get", {"id": 10**26}), -32602, "<= 9223372036854775807", 1, id="huge-job-id"
    ),
    pytest.param(
        rpc("job.list", {"before": -(10**30)}),
        -32602,
        ">= -9223372036854775808",
        1,
        id="huge-negative-cursor",
    ),
]


@pytest.mark.parametrize(("raw", "code", "message", "reply_id"), FRAMING)
async def test_bad_frames_and_requests(
    tmp_path: Path, raw: bytes, code: int, message: str, reply_id: Any
) -> None:
    async with settled_world(tmp_path) as world:
        reply = await assert_refused_and_unchanged(world, raw, code, message, reply_id=reply_id)
        if code == -32601:
            assert "job.submit" in reply["error"]["data"]["methods"]


# --- job specs ---------------------------------------------------------------------------

SPECS = [
    pytest.param(
        submit({"argv": ["true"], "cpus": "four"}), -32602, r"\$\.job\.cpus", id="cpus-string"
    ),
    pytest.param(submit({"argv": "true"}), -32602, r"\$\.job\.argv", id="argv-not-list"),
    pytest.param(
        submit({"argv": ["true", 3]}), -32602, r"\$\.job\.argv", id="argv-item-not-string"
    ),
    pytest.param(submit({"argvs": ["true"]}), -32602, "argvs", id="typo-argvs"),
    pytest.param(
        submit({"argv": ["true"], "env": {"A": 1}}),
        -32602,
        r"\$\.job\.env",
        id="env-value-not-string",
    ),
    pytest.param(
        submit({"argv": ["true"], "requeue": "yes"}), -32602, "requeue", id="requeue-not-bool"
    ),
    pytest.param(
        rpc("job.submit", {"job": {"argv": ["true"]}, "jobs": [{"argv": ["true"]}]}),
        -32602,
        '"job" or "jobs"',
        id="job-and-jobs",
    ),
    pytest.param(rpc("job.submit", {}), -32602, '"job" or "jobs"', id="neither-job-nor-jobs"),
    pytest.param(rpc("job.submit", {"jobs": []}), -32602, "empty", id="empty-jobs"),
    pytest.param(submit({}), -32602, "argv", id="argv-missing"),
    pytest.param(submit({"argv": []}), -32010, "argv", id="argv-empty"),
    pytest.param(submit({"argv": [""]}), -32010, "argv", id="argv-empty-string"),
    pytest.param(
        submit({"argv": ["true"], "env": {"1BAD": "x"}}), -32010, "1BAD", id="env-bad-name"
    ),
    pytest.param(
        submit({"argv": ["true"], "env": {"A-B": "x"}}), -32010, "A-B", id="env-dash-name"
    ),
    pytest.param(submit({"argv": ["true"], "memory": "lots"}), -32010, "memory", id="memory-words"),
    pytest.param(
        submit({"argv": ["true"], "memory": "-4G"}), -32010, "memory", id="memory-negative"
    ),
    pytest.param(submit({"argv": ["true"], "memory": 0}), -32010, "memory", id="memory-zero"),
    pytest.param(
        submit({"argv": ["true"], "walltime": "forever"}), -32010, "walltime", id="walltime-words"
    ),
    pytest.param(
        submit({"argv": ["true"], "walltime": "0s"}), -32010, "walltime", id="walltime-zero"
    ),
    pytest.param(
        submit({"argv": ["true"], "walltime": "1h30x"}), -32010, "walltime", id="walltime-bad-unit"
    ),
    pytest.param(submit({"argv": ["true"], "cpus": 0}), -32010, "cpus", id="cpus-zero"),
    pytest.param(
        submit({"argv": ["true"], "retries": 1000}), -32010, "retries", id="retries-too-many"
    ),
    pytest.param(
        submit({"argv": ["true"], "name": "my job"}), -32010, "name", id="name-with-space"
    ),
    pytest.param(
        submit({"argv": ["true"], "queue": "short; rm -rf ~"}),
        -32010,
        "queue",
        id="queue-injection",
    ),
    pytest.param(
        submit({"argv": ["true"], "workdir": "relative/dir"}),
        -32010,
        "workdir",
        id="workdir-relative",
    ),
    pytest.param(
        submit({"argv": ["true"], "directives": ["--a\n--b"]}),
        -32010,
        "directives",
        id="directive-two-lines",
    ),
    pytest.param(submit({"argv": ["true"], "after": [999]}), -32004, "999", id="after-missing-job"),
    pytest.param(
        submit({"argv": ["true"], "after": [0]}), -32010, "0 is not a job id", id="after-zero"
    ),
    pytest.param(
        submit({"argv": ["true"], "after": ["nobody"]}), -32010, "nobody", id="after-unknown-name"
    ),
    pytest.param(
        submit({"argv": ["true"], "cluster": "mars"}), -32006, "mars", id="unknown-cluster"
    ),
    pytest.param(
        submit_many(
            [
                {"name": "a", "argv": ["true"], "after": ["b"]},
                {"name": "b", "argv": ["true"], "after": ["c"]},
                {"name": "c", "argv": ["true"], "after": ["a"]},
            ]
        ),
        -32005,
        "cycle",
        id="cycle-of-three",
    ),
    pytest.param(
        submit_many([{"name": "a", "argv": ["true"], "after": ["a"]}]),
        -32010,
        "itself",
        id="after-itself",
    ),
    pytest.param(
        submit_many([{"name": "a", "argv": ["true"]}, {"name": "a", "argv": ["true"]}]),
        -32010,
        "twice",
        id="duplicate-names",
    ),
    # all or nothing: good jobs next to one bad job are not created either
    pytest.param(
        submit_many([{"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"], "memory": "lots"}]),
        -32010,
        r"jobs\[2\]",
        id="one-bad-spec-of-three",
    ),
    pytest.param(
        submit_many([{"argv": ["true"]}, {"argv": ["true"], "cluster": "mars"}]),
        -32006,
        "mars",
        id="one-unknown-cluster-of-two",
    ),
    pytest.param(
        submit_many([{"argv": ["true"]}, {"argv": ["true"], "after": [999]}]),
        -32004,
        "999",
        id="one-missing-parent-of-two",
    ),
    pytest.param(
        submit_many(
            [
                {"name": "ok", "argv": ["true"]},
                {"argv": ["true"], "after": ["ok", "x"], "cpus": "1"},
            ]
        ),
        -32602,
        r"\$\.jobs\[1\]\.cpus",
        id="type-error-in-second-job",
    ),
]


@pytest.mark.parametrize(("raw", "code", "message"), SPECS)
async def test_invalid_job_specs(tmp_path: Path, raw: bytes, code: int, message: str) -> None:
    async with settled_world(tmp_path) as world:
        await assert_refused_and_unchanged(world, raw, code, message)


async def test_unknown_dependency_lists_the_missing_ids(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as world:
        raw = submit_many(
            [{"argv": ["true"], "after": [world.done, 998]}, {"argv": ["true"], "after": [999]}]
        )
        reply = await assert_refused_and_unchanged(world, raw, -32004, "998")
        assert reply["error"]["data"] == {"missing": [998, 999]}


async def test_cycle_names_the_jobs(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as world:
        raw = submit_many([{"name": "x", "argv": ["true"]},
                           {"name": "a", "argv": ["true"], "after": ["b", "x"]},
                           {"name": "b", "argv": ["true"], "after": ["a"]}])  # fmt: skip
        reply = await assert_refused_and_unchanged(world, raw, -32005, r"jobs\[1\].*jobs\[2\]")
        cycle = reply["error"]["data"]["cycle"]
        assert cycle[0] == cycle[-1] and set(cycle) == {1, 2}


async def test_unknown_cluster_lists_the_configured_ones(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as world:
        reply = await assert_refused_and_unchanged(
            world, submit({"argv": ["true"], "cluster": "mars"}), -32006, "mars"
        )
        assert reply["error"]["data"] == {"clusters": ["local"]}


# --- reads and state changes ---------------------------------------------------------------


async def test_unknown_job_on_get_and_cancel(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as world:
        await assert_refused_and_unchanged(world, rpc("job.get", {"id": 999}), -32001, "999")
        await assert_refused_and_unchanged(world, rpc("job.cancel", {"id": 999}), -32001, "999")
        await assert_refused_and_unchanged(world, rpc("job.retry", {"ids": [999]}), -32001, "999")


async def test_illegal_transitions(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as w:
        await assert_refused_and_unchanged(
            w, rpc("job.cancel", {"id": w.done}), -32002, "completed"
        )
        await assert_refused_and_unchanged(
            w, rpc("job.release", {"id": w.waiting}), -32002, "not held"
        )
        await assert_refused_and_unchanged(w, rpc("job.retry", {"id": w.done}), -32002, "completed")
        await assert_refused_and_unchanged(
            w, rpc("job.retry", {"id": w.waiting}), -32002, "pending"
        )
        await assert_refused_and_unchanged(w, rpc("job.hold", {"id": w.done}), -32002, "completed")
        await assert_refused_and_unchanged(w, rpc("job.hold", {"id": w.held}), -32002, "held")


async def test_cancel_is_all_or_nothing(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as w:
        reply = await assert_refused_and_unchanged(
            w, rpc("job.cancel", {"ids": [w.waiting, 999]}), -32001, "999"
        )
        assert [r["id"] for r in reply["error"]["data"]["refused"]] == [999]
        reply = await assert_refused_and_unchanged(
            w, rpc("job.cancel", {"ids": [w.waiting, w.held, w.done]}), -32002, "completed"
        )
        assert [r["id"] for r in reply["error"]["data"]["refused"]] == [w.done]
        states = {j["id"]: j["state"] for j in (await w.client.call("job.list"))["jobs"]}
        assert states[w.waiting] == "pending" and states[w.held] == "held"


async def test_if_version_conflict(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as w:
        job = await w.client.call("job.get", {"id": w.held})
        assert job["version"] == 2
        reply = await assert_refused_and_unchanged(
            w, rpc("job.release", {"id": w.held, "if_version": 1}), -32003, "version 2"
        )
        assert reply["error"]["data"]["refused"][0]["code"] == -32003
        await assert_refused_and_unchanged(
            w, rpc("job.cancel", {"id": w.waiting, "if_version": 7}), -32003, "version"
        )
        # the right version goes through
        out = await w.client.call("job.release", {"id": w.held, "if_version": 2})
        assert out["jobs"][0]["state"] == "pending" and out["jobs"][0]["version"] == 3


BAD_PARAMS = [
    pytest.param("job.get", {}, '"id"', id="get-without-id"),
    pytest.param("job.get", {"id": "1"}, r"\$\.id", id="get-id-string"),
    pytest.param("job.get", {"idd": 1}, "idd", id="get-typo"),
    pytest.param("job.cancel", {"id": 1, "ids": [1]}, '"id" or "ids"', id="cancel-id-and-ids"),
    pytest.param("job.cancel", {"ids": []}, "empty", id="cancel-empty-ids"),
    pytest.param("job.cancel", {"ids": [3, 3]}, "twice", id="cancel-duplicate-ids"),
    pytest.param(
        "job.release", {"ids": [3, 4], "if_version": 1}, "if_version", id="if-version-with-ids"
    ),
    pytest.param("job.list", {"state": "bogus"}, "bogus", id="list-unknown-state"),
    pytest.param("job.list", {"limit": 0}, "limit", id="list-limit-zero"),
    pytest.param("job.list", {"limit": 10**6}, "limit", id="list-limit-huge"),
    pytest.param("job.list", {"stat": "running"}, "stat", id="list-typo"),
    pytest.param("events.list", {"limit": 100000}, "limit", id="events-limit-huge"),
    pytest.param("events.list", {"since": "yesterday"}, r"\$\.since", id="events-since-string"),
    pytest.param("events.subscribe", {"ids": "3"}, r"\$\.ids", id="subscribe-ids-string"),
]


@pytest.mark.parametrize(("method", "params", "message"), BAD_PARAMS)
async def test_bad_params(
    tmp_path: Path, method: str, params: dict[str, Any], message: str
) -> None:
    async with settled_world(tmp_path) as world:
        await assert_refused_and_unchanged(world, rpc(method, params), -32602, message)


# --- size limit ----------------------------------------------------------------------------


async def test_oversized_line_is_refused_and_the_connection_stays_usable(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as w:
        # a valid submit that is too long: refused with id null, nothing created
        big = submit({"argv": ["echo", "x" * (2 * MAX_BYTES)]})
        reply = await assert_refused_and_unchanged(w, big, -32007, str(MAX_BYTES), reply_id=None)
        assert reply["error"]["message"]
        # sent in small pieces, then followed by a valid request in the same write
        before = await snapshot(w.client)
        body = submit({"argv": ["echo", "y" * (300 * 1024)]}).rstrip(b"\n")
        for start in range(0, len(body), 1000):
            await w.client.send_raw(body[start : start + 1000])
        await w.client.send_raw(b"\n" + rpc("daemon.ping", req_id="after"))
        first = await w.client.read_message(10)
        second = await w.client.read_message(10)
        assert first["id"] is None and first["error"]["code"] == -32007
        assert second["id"] == "after" and second["result"]["pong"] is True
        assert await snapshot(w.client) == before
        # a line of exactly the limit (the newline does not count) is accepted
        shape = {"argv": ["echo", ""], "after": [w.sleeper]}
        filler = MAX_BYTES - (len(submit(shape)) - 1)
        ok = submit({**shape, "argv": ["echo", "z" * filler]})
        assert len(ok) - 1 == MAX_BYTES
        reply = await exchange(w.client, ok)
        assert "result" in reply, reply


async def test_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    async with settled_world(tmp_path) as w:
        before = await snapshot(w.client)
        await w.client.send_raw(b"\n\n   \n")
        reply = await exchange(w.client, rpc("daemon.ping", req_id=5)[:-1] + b"\r\n")
        assert (
            reply == {"jsonrpc": "2.0", "id": 5, "result": reply["result"]}
            and reply["result"]["pong"]
        )
        assert await snapshot(w.client) == before


# --- who may connect -----------------------------------------------------------------------


def test_peer_allowed_rule() -> None:
    me = os.getuid()
    stranger = me + 12345 if me != 0 else 54321
    assert peer_allowed(os.getpid(), stranger, stranger, None) is False
    assert peer_allowed(os.getpid(), me, os.getgid(), None) is True
    assert peer_allowed(os.getpid(), 0, 0, None) is True
    # a configured group lets its members in, and only them
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    assert peer_allowed(os.getpid(), stranger, os.getgid(), group) is True
    assert peer_allowed(os.getpid(), stranger, stranger, "no-such-group-xyz") is False


async def test_socket_mode_is_0600(tmp_path: Path) -> None:
    async with running_daemon(small_limit_settings(tmp_path)) as d:
        mode = stat.S_IMODE(os.stat(d.socket).st_mode)
        assert mode == 0o600, oct(mode)
        assert stat.S_ISSOCK(os.stat(d.socket).st_mode)


_STRANGER_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
# read before writing: a request still unread when the daemon closes makes the kernel
# reset the connection, and the refusal line can be lost (see PROTOCOL.md, transport)
s.settimeout(10)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


SYSTEM_PYTHON = "/usr/bin/python3"  # runnable by other users, unlike a venv under /root


@pytest.mark.skipif(
    os.getuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root (to connect as another user) and a system python3",
)
async def test_other_user_is_refused_even_if_the_file_mode_lets_it_in(tmp_path: Path) -> None:
    public = Path(tempfile.mkdtemp(prefix="sd-peer-"))
    try:
        public.chmod(0o755)
        sock_path = public / "sd.sock"
        async with running_daemon(small_limit_settings(tmp_path, sock_path)) as d:
            os.chmod(d.socket, 0o666)  # defeat the first fence; SO_PEERCRED must still refuse
            done = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [SYSTEM_PYTHON, "-c", _STRANGER_CLIENT, str(sock_path)],
                    capture_output=True, timeout=20, user=65534, group=65534,
                    cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                )
            )  # fmt: skip
            assert done.returncode == 0, done.stderr.decode()
            lines = done.stdout.decode().splitlines()
            assert len(lines) == 1, lines  # one error, then the daemon closed the connection
            reply = json.loads(lines[0])
            assert reply["id"] is None and reply["error"]["code"] == -32008
            assert "65534" in reply["error"]["message"]
            # and the daemon's own user is still served
            c = await d.client()
            assert (await c.call("daemon.ping"))["pong"] is True
            await c.aclose()
    finally:
        for child in public.iterdir():
            child.unlink()
        public.rmdir()
