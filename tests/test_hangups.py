"""A client's failure ends its connection only, never the daemon (issue 6, critical).

Every method of the control protocol is called while the peer hangs up before, during
and after the reply; then the daemon must still answer. The method table is walked, so a
method added later is covered (it must get sample params below).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd import control
from schedulerd.client import AsyncClient
from schedulerd.errors import MessageTooLarge
from schedulerd.methods import HANDLERS
from tests.harness import daemon_process, local_settings, running_daemon, write_config

JOBS = 3000  # enough that job.list / events replies do not fit a socket buffer

# params that make each method do real work (and write a big reply where it can)
SAMPLES: dict[str, dict[str, Any]] = {
    "daemon.ping": {},
    "daemon.info": {},
    "job.submit": {"job": {"argv": ["true"]}},
    "job.get": {"id": 1},
    "job.list": {"limit": JOBS},
    "job.states": {"ids": list(range(1, JOBS + 1))},
    "job.cancel": {"id": 2},
    "job.hold": {"id": 3},
    "job.release": {"id": 3},
    "job.retry": {"id": 2},
    "clusters.list": {},
    "clusters.check": {"name": "local"},
    "clusters.drain": {"name": "local"},
    "clusters.resume": {"name": "nope"},  # resuming would start the jobs: an error reply
    "events.list": {"since": 0, "limit": JOBS},
    "events.subscribe": {"since": 0},
    "events.unsubscribe": {},
}
NOT_COVERED = {"daemon.shutdown"}  # ends the daemon by design


def test_every_method_has_a_sample() -> None:
    missing = set(HANDLERS) - set(SAMPLES) - NOT_COVERED
    assert not missing, f"add sample params for {sorted(missing)} to SAMPLES"


def _request(method: str, req_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method,
                       "params": SAMPLES[method]}).encode() + b"\n"  # fmt: skip


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (what a killed client's kernel may do)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _hang_up(path: Path, method: str, mode: str) -> None:
    def run() -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(_request(method))
        if mode == "before":
            sock.close()  # the daemon has not even read the request yet
            return
        if mode == "during":
            sock.recv(1)  # the reply (or notification stream) has begun
            _reset(sock)
            return
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection without a reply"
            data += chunk
        sock.close()

    await anyio.to_thread.run_sync(run)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before", "during", "after"])
async def test_peer_hanging_up_never_ends_the_daemon(tmp_path: Path, mode: str) -> None:
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        await client.call("clusters.drain", {"name": "local"})  # the jobs stay `ready`
        await client.call("job.submit", {"jobs": [{"argv": ["true"]} for _ in range(JOBS)]})
        for method in HANDLERS:
            if method in NOT_COVERED:
                continue
            for _ in range(3):
                await _hang_up(d.socket, method, mode)
            # the daemon still serves, both an old and a new connection
            assert (await client.call("daemon.ping"))["pong"] is True, method
            fresh = await d.client()
            assert (await fresh.call("daemon.ping"))["pong"] is True, method
            await fresh.aclose()
        await client.aclose()


async def test_subscriber_that_never_reads_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "WRITE_TIMEOUT", 1.0)
    settings = local_settings(tmp_path)
    async with running_daemon(settings) as d:
        client = await d.client()
        await client.call("clusters.drain", {"name": "local"})
        await client.call("job.submit", {"jobs": [{"argv": ["true"]} for _ in range(JOBS)]})
        stuck = socket.socket(socket.AF_UNIX)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(str(d.socket))
        stuck.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                                  "params": {"since": 0}}).encode() + b"\n")  # fmt: skip

        def closed_by_daemon() -> bool:
            # read nothing until the daemon gave up on us, then drain: EOF must follow
            time.sleep(3)
            stuck.settimeout(30)
            while True:
                try:
                    if not stuck.recv(1 << 20):
                        return True
                except ConnectionResetError:
                    return True

        assert await anyio.to_thread.run_sync(closed_by_daemon)
        stuck.close()
        assert (await client.call("daemon.ping"))["pong"] is True
        await client.aclose()


async def test_unfinished_lines_are_capped_across_connections(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, top="max_message_bytes = 4096\nmax_buffered_bytes = 10000")
    async with running_daemon(settings) as d:
        half = (
            b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.ping", "params": {"pad": "'
            + b"x" * 3000
        )
        holders = [await d.client() for _ in range(3)]
        for h in holders:
            await h.send_raw(half)  # 3 x ~3 KB held, within the budget
        await anyio.sleep(0.5)
        over = await d.client()
        await over.send_raw(half + b'"}}\n')  # would take the total past 10,000 bytes
        reply = await over.read_reply()
        assert reply["error"]["code"] == MessageTooLarge.code, reply
        assert "all clients" in reply["error"]["message"]
        # the connection that was refused is still usable, and so are the others
        assert (await over.call("daemon.ping"))["pong"] is True
        await holders[0].send_raw(b'"}}\n')
        assert (await holders[0].read_reply())["error"]["code"] == -32602  # unknown "pad"
        for h in holders:
            await h.aclose()
        # the budget was given back by the connections that went away
        again = [await d.client() for _ in range(3)]
        for a in again:
            await a.send_raw(half)
        await anyio.sleep(0.5)
        await over.send_raw(b'{"jsonrpc": "2.0", "id": 7, "method": "daemon.ping"}\n')
        assert (await over.read_reply())["result"]["pong"] is True
        for a in again:
            await a.aclose()
        await over.aclose()


@pytest.mark.slow
async def test_schedctl_events_follow_killed_while_events_flow(tmp_path: Path) -> None:
    """The reproduction from the issue, with a real daemon process and a real schedctl."""
    state, sock = tmp_path / "state", tmp_path / "sd.sock"
    config = write_config(tmp_path, '[clusters.local]\nscheduler = "local"\nmax_jobs = 2\n'
                                    'poll_interval = "0.2s"\n')  # fmt: skip
    with daemon_process(state, sock, config) as daemon:
        client = await AsyncClient.connect(sock)
        await client.call("clusters.drain", {"name": "local"})
        await client.call("job.submit", {"jobs": [{"argv": ["true"]} for _ in range(JOBS)]})
        env = {**os.environ, "SCHEDULERD_SOCKET": str(sock)}
        for _ in range(3):
            follower = subprocess.Popen([sys.executable, "-m", "schedulerd.cli", "events", "--follow",
                                         "--since", "0"], stdout=subprocess.PIPE, env=env)  # fmt: skip
            assert follower.stdout is not None
            follower.stdout.readline()  # events are flowing
            follower.send_signal(signal.SIGKILL)
            follower.wait()
            follower.stdout.close()
            # and a raw subscriber that reads one line and goes
            raw = socket.socket(socket.AF_UNIX)
            raw.connect(str(sock))
            raw.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                                    "params": {"since": 0}}).encode() + b"\n")  # fmt: skip
            raw.recv(100)
            raw.close()
            assert (await client.call("daemon.ping"))["pong"] is True
        assert daemon.poll() is None, "the daemon ended"
        await client.aclose()
