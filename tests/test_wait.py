"""``final`` on every job, ``job.states``, and ``schedctl wait`` (issue 6).

``wait`` blocks until every job is final (a failed job with an attempt left is not), reads
the states of its jobs once and then only those whose events arrive, takes durations for
``--timeout``, and says on stderr when a cluster it waits on is degraded.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd.client import Client
from schedulerd.state.transitions import State, is_final
from tests.fakebatch.core import gated
from tests.harness import daemon_process, local_config, local_settings, running_daemon
from tests.helpers.fake_cluster import fake_cluster, submit, wait_state

# the second attempt of a failing job starts this long after the first failed: `wait`
# seeing the first failure and returning is then plain to see
SLOW_RETRY_CONFIG = local_config().replace('retry_base = "1s"', 'retry_base = "3s"')


def ctl(sock: str | Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
    return subprocess.run(
        [sys.executable, "-m", "schedulerd.cli", "--socket", str(sock), *args],
        check=False, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@contextlib.contextmanager
def daemon(root: Path, config: str = local_config()) -> Iterator[str]:
    path = root / "schedulerd.toml"
    path.write_text(config)
    with daemon_process(root / "state", root / "sd.sock", path, log_path=root / "daemon.log"):
        yield str(root / "sd.sock")


def call(sock: str, method: str, params: dict[str, Any] | None = None) -> Any:
    client = Client(sock)
    try:
        return client.call(method, params)
    finally:
        client.close()


def poll_until(what: str, condition: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        time.sleep(0.05)
    return result


# --- final --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "attempt", "max_attempts", "final"),
    [
        (State.COMPLETED, 1, 1, True),
        (State.COMPLETED, 1, 3, True),
        (State.CANCELLED, 1, 3, True),
        (State.SKIPPED, 1, 3, True),
        (State.FAILED, 1, 2, False),  # the store retries it: it is on its way to ready
        (State.FAILED, 2, 2, True),
        (State.TIMEOUT, 1, 3, False),
        (State.TIMEOUT, 3, 3, True),
        (State.LOST, 2, 3, False),
        (State.LOST, 4, 3, True),  # a user retry past max_attempts, lost again
        (State.PENDING, 1, 1, False),
        (State.READY, 2, 2, False),
        (State.HELD, 1, 1, False),
        (State.SUBMITTING, 1, 1, False),
        (State.QUEUED, 1, 1, False),
        (State.RUNNING, 1, 1, False),
    ],
)
def test_is_final(state: State, attempt: int, max_attempts: int, final: bool) -> None:
    assert is_final(state, attempt=attempt, max_attempts=max_attempts) is final


async def test_job_objects_say_final_only_after_the_last_attempt(tmp_path: Path) -> None:
    # attempt 1 fails at once; attempt 2 fails once the test creates the gate
    first, gate = tmp_path / "first", tmp_path / "gate"
    script = (f"if [ -e {first} ]; then while [ ! -e {gate} ]; do sleep 0.05; done;"
              f" else touch {first}; fi; exit 3")  # fmt: skip
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            jid = (await client.call("job.submit", {"job": {"argv": ["sh", "-c", script],
                                                            "retries": 1}}))["id"]  # fmt: skip
            await client.call("events.subscribe", {"since": 0, "ids": [jid]})
            seen = []
            while (len(seen) < 2 or seen[-1] != ("failed", 2)) and len(seen) < 50:
                event = (await client.next_notification())["params"]
                if event["to"] != "failed":
                    continue
                seen.append((event["to"], event["attempt"]))
                job = await client.call("job.get", {"id": jid})
                listed = (await client.call("job.list", {"limit": 1}))["jobs"][0]
                states = (await client.call("job.states", {"ids": [jid]}))["jobs"][0]
                if event["attempt"] == 1:
                    # its retry is already scheduled: not final, whatever its state now
                    assert job["final"] is False and job["attempt"] == 2, job
                    assert listed["final"] is False and states["final"] is False
                    gate.touch()
            assert seen == [("failed", 1), ("failed", 2)]
            assert (job["state"], job["final"], job["exit_code"]) == ("failed", True, 3)
            assert listed["final"] is True
            assert states == {"id": jid, "state": "failed", "final": True, "exit_code": 3,
                              "cluster": "local"}  # fmt: skip
        finally:
            await client.aclose()


# --- job.states -------------------------------------------------------------------------------


async def test_job_states_reports_each_job_once_and_the_missing(tmp_path: Path) -> None:
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            ids = (await client.call("job.submit", {"jobs": [{"argv": ["sleep", "300"]},
                                                             {"argv": ["true"]}]}))["ids"]  # fmt: skip
            result = await client.call("job.states", {"ids": [ids[1], 999, ids[0], ids[1]]})
            assert [j["id"] for j in result["jobs"]] == [ids[1], ids[0]]
            assert result["missing"] == [999]
            assert all(j["cluster"] == "local" for j in result["jobs"])
            sleeper = next(j for j in result["jobs"] if j["id"] == ids[0])
            assert sleeper["final"] is False and sleeper["exit_code"] is None
            assert result["cursor"] <= (await client.call("daemon.info"))["last_event"]
            # the cursor comes before the states: a subscription from it shows every
            # change the states may not show yet
            await client.call("job.cancel", {"id": ids[0]})
            again = await client.call("job.states", {"ids": [ids[0]]})
            assert again["jobs"][0]["state"] == "cancelled" and again["jobs"][0]["final"] is True
            log = await client.call("events.list", {"since": result["cursor"], "ids": [ids[0]]})
            assert "cancelled" in [e["to"] for e in log["events"]]
            for bad in ({"ids": []}, {"ids": list(range(1, 100_002))}, {"id": 1}, {}):
                with pytest.raises(Exception, match="-32602"):
                    await client.call("job.states", bad)
            big = await client.call("job.states", {"ids": list(range(1, 100_001))})
            assert len(big["missing"]) == 100_000 - 2 and len(big["jobs"]) == 2
        finally:
            await client.aclose()


async def test_subscribe_to_more_ids_than_sqlite_takes_in_a_statement(tmp_path: Path) -> None:
    """A big campaign's wait subscribes to all its ids: 40,000 ids are more variables than
    one SQLite statement takes (the subscription failed), and only those jobs' events come."""
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            other = (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"]
            mine = (await client.call("job.submit", {"job": {"argv": ["sleep", "300"]}}))["id"]
            wanted = [*range(10_000_000, 10_040_000), mine]
            await client.call("events.subscribe", {"since": 0, "ids": wanted})
            await client.call("job.cancel", {"id": mine})
            seen = []
            while "cancelled" not in seen:
                event = (await client.next_notification())["params"]
                assert event["job_id"] == mine, event
                seen.append(event["to"])
            assert seen[0] == "ready" and other not in wanted
        finally:
            await client.aclose()


async def test_events_list_over_more_ids_than_sqlite_takes_in_a_statement(tmp_path: Path) -> None:
    """events.list with 40,000 ids answered -32603 (too many SQL variables)."""
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        try:
            mine = (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"]
            other = (await client.call("job.submit", {"job": {"argv": ["true"]}}))["id"]
            wanted = [*range(10_000_000, 10_040_000), mine]
            events = (await client.call("events.list", {"since": 0, "ids": wanted}))["events"]
            assert events and {e["job_id"] for e in events} == {mine} and other not in wanted
        finally:
            await client.aclose()


# --- schedctl wait ----------------------------------------------------------------------------


def test_wait_blocks_while_a_retry_is_scheduled(tmp_path: Path) -> None:
    """It returned at the first `failed`, with the second attempt 3 s away."""
    with daemon(tmp_path, SLOW_RETRY_CONFIG) as sock:
        jid = call(sock, "job.submit", {"job": {"argv": ["sh", "-c", "exit 3"], "retries": 1}})[
            "id"
        ]
        done = ctl(sock, "--json", "wait", str(jid), "--timeout", "60")
        assert done.returncode == 1, (done.stdout, done.stderr)
        job = call(sock, "job.get", {"id": jid})
        assert (job["state"], job["attempt"], job["final"]) == ("failed", 2, True), job
        assert json.loads(done.stdout) == {
            "jobs": [{"id": jid, "state": "failed", "final": True, "exit_code": 3}],
            "timed_out": False,
        }
        # a retry that succeeds: exit 0
        once = f"[ -e {tmp_path}/2 ] || {{ touch {tmp_path}/2; exit 1; }}"
        ok = call(sock, "job.submit", {"job": {"argv": ["sh", "-c", once], "retries": 1}})["id"]
        done = ctl(sock, "wait", str(ok), "--timeout", "60")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert call(sock, "job.get", {"id": ok})["attempt"] == 2


def test_wait_timeout_takes_durations(tmp_path: Path) -> None:
    with daemon(tmp_path) as sock:
        jid = call(sock, "job.submit", {"job": {"argv": ["sleep", "300"]}})["id"]
        try:
            for timeout in ("1s", "0:00:01", "1", "0.5"):
                done = ctl(sock, "wait", str(jid), "--timeout", timeout)
                assert done.returncode == 7, (timeout, done.stderr)
                assert "timed out" in done.stderr and str(jid) in done.stderr
            bad = ctl(sock, "wait", str(jid), "--timeout", "soon")
            assert bad.returncode == 2 and "--timeout" in bad.stderr and "soon" in bad.stderr
        finally:
            call(sock, "job.cancel", {"id": jid})


class CountingProxy:
    """A socket between schedctl and the daemon that records every request and can hold
    back what the daemon sends (``hold()``/``release()``), to hand over a burst at once."""

    def __init__(self, target: str, path: Path) -> None:
        self.target = target
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.notes_from_daemon = 0
        self.replies_from_daemon = 0
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def methods(self) -> list[str]:
        """The methods called, but for wait's look at the clusters every few seconds."""
        with self._lock:
            return [str(r["method"]) for r in self.requests if r["method"] != "clusters.list"]

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                mine, _ = self._listener.accept()
                theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                theirs.connect(self.target)
                self._sockets += [mine, theirs]
                for pump in (self._up, self._down):
                    thread = threading.Thread(target=pump, args=(mine, theirs), daemon=True)
                    thread.start()

    def _up(self, mine: socket.socket, theirs: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while chunk := mine.recv(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                with self._lock:
                    self.requests += [json.loads(line) for line in lines if line.strip()]
                theirs.sendall(chunk)
        with contextlib.suppress(OSError):
            theirs.shutdown(socket.SHUT_WR)

    def _down(self, mine: socket.socket, theirs: socket.socket) -> None:
        buffer = b""
        held = bytearray()
        theirs.settimeout(0.05)  # to notice release() while the daemon says nothing
        with contextlib.suppress(OSError):
            while True:
                try:
                    chunk = theirs.recv(1 << 16)
                except TimeoutError:
                    chunk = None
                if chunk == b"":
                    break
                if chunk:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    with self._lock:
                        for line in lines:
                            if b'"method"' in line:
                                self.notes_from_daemon += 1
                            else:
                                self.replies_from_daemon += 1
                    held += chunk
                if held and self._open.is_set():
                    mine.sendall(held)
                    held.clear()
            if held:
                mine.sendall(held)
        with contextlib.suppress(OSError):
            mine.shutdown(socket.SHUT_WR)


def test_wait_reads_the_states_once_then_only_what_changed(tmp_path: Path) -> None:
    """3,001 jobs change at once: a look per job (job.get each, as before) would be 3,001
    round trips; wait asks job.states once, then once per burst of events."""
    with daemon(tmp_path) as sock:
        parent = call(sock, "job.submit", {"job": {"argv": ["sleep", "300"]}})["id"]
        children = call(sock, "job.submit",
                        {"jobs": [{"argv": ["true"], "after": [parent]}] * 3000})["ids"]  # fmt: skip
        done = call(sock, "job.submit", {"job": {"argv": ["true"]}})["id"]
        ids = [parent, *children]
        # nothing changes meanwhile: whatever the proxy sees comes from what the test does
        poll_until("job done", lambda: call(sock, "job.get", {"id": done})["final"])
        poll_until(
            "parent running", lambda: call(sock, "job.get", {"id": parent})["state"] == "running"
        )
        proxy = CountingProxy(sock, tmp_path / "proxy.sock")
        try:
            # already final: one call and no subscription
            quick = ctl(proxy.path, "wait", "--timeout", "60", str(done))
            assert quick.returncode == 0, quick.stderr
            assert proxy.methods() == ["job.states"]
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
            waiter = subprocess.Popen(
                [sys.executable, "-m", "schedulerd.cli", "--socket", str(proxy.path), "--json",
                 "wait", "--timeout", "120", *map(str, ids)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            try:
                poll_until("subscribed", lambda: proxy.replies_from_daemon >= 3)
                assert proxy.methods()[1:] == ["job.states", "events.subscribe"]
                subscribe = next(r for r in proxy.requests if r["method"] == "events.subscribe")
                subscribe = subscribe["params"]
                assert sorted(subscribe["ids"]) == sorted(ids)
                proxy.hold()
                call(sock, "job.cancel", {"id": parent})  # skips every child at once
                poll_until("events sent", lambda: proxy.notes_from_daemon >= len(ids))
                proxy.release()
                out, err = waiter.communicate(timeout=90)
            finally:
                if waiter.poll() is None:
                    waiter.kill()
                    waiter.communicate()
            assert waiter.returncode == 1, err
            result = json.loads(out)
            assert result["timed_out"] is False
            assert {j["state"] for j in result["jobs"]} == {"cancelled", "skipped"}
            later = proxy.methods()[3:]
            assert set(later) == {"job.states"}, later
            # one per burst the client found waiting; never one per job
            assert len(later) < 50, len(later)
        finally:
            proxy.close()


async def test_wait_says_when_its_cluster_is_degraded(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with fake_cluster(tmp_path, "slurm") as c:
        jid = await submit(c.client, list(gated(gate)))
        await wait_state(c.client, jid, {"running"})
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
        async with await anyio.open_process(
            [sys.executable, "-m", "schedulerd.cli", "--socket", str(c.daemon.socket), "wait",
             str(jid), "--timeout", "120"], env=env,
        ) as waiter:  # fmt: skip
            assert waiter.stderr is not None
            lines: list[str] = []
            buffer = b""

            async def read_line() -> str:
                nonlocal buffer
                with anyio.fail_after(60):
                    while b"\n" not in buffer:
                        assert waiter.stderr is not None
                        buffer += await waiter.stderr.receive()
                line, _, buffer = buffer.partition(b"\n")
                lines.append(line.decode())
                return lines[-1]

            c.head.set_faults(down=True)  # every status command fails: degraded soon
            line = await read_line()
            assert line.startswith("schedctl: waiting on cluster head, which is degraded: "), line
            c.head.set_faults(down=False)
            assert await read_line() == "schedctl: cluster head is no longer degraded"
            gate.touch()
            with anyio.fail_after(60):
                status = await waiter.wait()
            assert waiter.stderr is not None
            rest = (buffer + b"".join([chunk async for chunk in waiter.stderr])).decode()
        assert status == 0, (lines, rest)
        assert rest == "", "one line per change, not one per look"
