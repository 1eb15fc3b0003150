"""``schedulerd.client``: the framing and error mapping both clients share, each client
against a scripted peer, and the "Python client" example of PROTOCOL.md run for real."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from schedulerd.client import AsyncClient, Client, LineReader, RpcError, result_of
from schedulerd.errors import InvalidParams, JobNotFound
from tests.harness import local_settings, running_daemon

DOC = Path(__file__).resolve().parents[1] / "PROTOCOL.md"


def test_an_error_reply_raises_with_its_code_message_and_data() -> None:
    reply = {"jsonrpc": "2.0", "id": 1,
             "error": {"code": -32001, "message": "no job with id 9", "data": {"missing": [9]}}}  # fmt: skip
    with pytest.raises(RpcError) as caught:
        result_of(reply)
    err = caught.value
    assert (err.code, err.message, err.data) == (-32001, "no job with id 9", {"missing": [9]})
    assert str(err) == "-32001: no job with id 9"
    assert err.error_class is JobNotFound and err.exit_status == JobNotFound.exit_status == 4
    assert result_of({"jsonrpc": "2.0", "id": 1, "result": {"ok": 1}}) == {"ok": 1}
    with pytest.raises(RpcError) as caught:  # a reply without a code is an internal error
        result_of({"jsonrpc": "2.0", "id": 1, "error": {"message": "?"}})
    assert caught.value.code == -32603 and caught.value.exit_status == 10


def test_lines_are_split_wherever_the_chunks_end() -> None:
    reader = LineReader()
    reader.feed(b'{"a":1}\n\r\n{"b"')
    assert reader.next_message() == {"a": 1}
    assert reader.next_message() is None  # a blank line is skipped, the rest is not whole
    reader.feed(b":2}\n")
    assert reader.next_message() == {"b": 2}
    reader.feed(b"[1]\n")
    with pytest.raises(ConnectionError, match="unexpected reply"):
        reader.next_message()


#: what the scripted peer answers to request 1: a notification, a stale reply to a call
#: given up on, then the reply itself
SCRIPT = [
    {"jsonrpc": "2.0", "method": "events.event", "params": {"cursor": 5}},
    {"jsonrpc": "2.0", "id": 99, "result": "stale"},
    {"jsonrpc": "2.0", "id": 1, "result": {"pong": True}},
]
ERROR = {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "bad", "data": None}}


async def _scripted_peer(path: Path, tg: anyio.abc.TaskGroup) -> list[dict[str, object]]:
    """Serve one connection: read a request, answer it as SCRIPT does; then ERROR."""
    seen: list[dict[str, object]] = []
    listener = await anyio.create_unix_listener(path)

    async def serve() -> None:
        async with listener:
            stream = await listener.accept()
            async with stream:
                buffer = b""
                for answer in (SCRIPT, [ERROR]):
                    while b"\n" not in buffer:
                        buffer += await stream.receive()
                    line, _, buffer = buffer.partition(b"\n")
                    seen.append(json.loads(line))
                    await stream.send(b"".join(json.dumps(m).encode() + b"\n" for m in answer))
                with anyio.move_on_after(30), contextlib.suppress(anyio.EndOfStream):
                    await stream.receive()  # until the client hangs up

    tg.start_soon(serve)
    return seen


async def test_the_async_client_keeps_notifications_and_skips_stale_replies(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        seen = await _scripted_peer(tmp_path / "s.sock", tg)
        async with await AsyncClient.connect(tmp_path / "s.sock") as client:
            assert await client.call("daemon.ping") == {"pong": True}
            with pytest.raises(RpcError, match="-32602: bad") as caught:
                await client.call("job.get", {"id": 0})
            assert caught.value.error_class is InvalidParams
            assert await client.next_notification(timeout=5) == SCRIPT[0]
    assert seen == [{"jsonrpc": "2.0", "id": 1, "method": "daemon.ping", "params": {}},
                    {"jsonrpc": "2.0", "id": 2, "method": "job.get", "params": {"id": 0}}]  # fmt: skip


async def test_the_blocking_client_does_the_same(tmp_path: Path) -> None:
    def talk() -> None:
        with Client(tmp_path / "s.sock", timeout=30) as client:
            assert client.call("daemon.ping") == {"pong": True}
            with pytest.raises(RpcError, match="-32602: bad"):
                client.call("job.get", {"id": 0})
            assert client.next_notification(timeout=0) == SCRIPT[0]
            assert client.next_notification(timeout=0) is None

    async with anyio.create_task_group() as tg:
        seen = await _scripted_peer(tmp_path / "s.sock", tg)
        await anyio.to_thread.run_sync(talk)
    assert [m["method"] for m in seen] == ["daemon.ping", "job.get"]


def test_the_blocking_client_says_where_it_could_not_connect(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match=r"cannot connect to schedulerd at .*nobody\.sock"):
        Client(tmp_path / "nobody.sock")


def _section_block(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(f"### {title}\n") :]
    match = re.search(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no python example under {title!r}"
    return match.group(1)


async def test_the_python_client_example_of_the_protocol_doc_works(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_section_block("Python client"))
    async with running_daemon(local_settings(tmp_path)) as d:
        env = {**os.environ, "SCHEDULERD_SOCKET": str(d.socket)}
        with anyio.fail_after(60):
            done = await anyio.run_process([sys.executable, str(script)], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["1 completed 0", "-32001 no job with id 1001"]
