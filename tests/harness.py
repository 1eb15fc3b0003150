"""Test helpers: an in-process daemon and a daemon subprocess (the client is
``schedulerd.client``'s).

Use them inside the test body (``async with running_daemon(...) as d:``), never as a
fixture holding a task group across ``yield`` (STYLE.md rule 15).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from schedulerd.client import AsyncClient
from schedulerd.config import Settings, load_settings
from schedulerd.daemon import run
from schedulerd.state.store import Store, open_store

TERMINAL = {"completed", "failed", "timeout", "lost", "cancelled", "skipped"}


async def wait_terminal(
    client: AsyncClient, ids: list[int], timeout: float = 60.0
) -> dict[int, dict[str, Any]]:
    """Poll job.get until every job is terminal."""
    deadline = time.monotonic() + timeout
    jobs: dict[int, dict[str, Any]] = {}
    while True:
        for jid in ids:
            if jid not in jobs or jobs[jid]["state"] not in TERMINAL:
                jobs[jid] = await client.call("job.get", {"id": jid})
        if all(j["state"] in TERMINAL for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            pending = {j: v["state"] for j, v in jobs.items() if v["state"] not in TERMINAL}
            raise TimeoutError(f"jobs not terminal after {timeout}s: {pending}")
        await anyio.sleep(0.1)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedulerd.toml"
    path.write_text(text)
    return path


def local_config(*, slots: int = 4, top: str = "", extra: str = "") -> str:
    """The tests' usual config: one quick-polling local cluster. ``top`` goes before the
    cluster table (top-level keys), ``extra`` inside it."""
    return f"""{top}
retry_base = "1s"
[clusters.local]
scheduler = "local"
max_jobs = {slots}
poll_interval = "0.2s"
exit_read_timeout = "3s"
{extra}
"""


def local_settings(
    tmp_path: Path, *, slots: int = 4, top: str = "", extra: str = "", socket: Path | None = None
) -> Settings:
    config = write_config(tmp_path, local_config(slots=slots, top=top, extra=extra))
    return load_settings(
        config=config,
        state_dir=tmp_path / "state",
        socket=socket or tmp_path / "sd.sock",
        environ={},
    )


@dataclass
class DaemonHandle:
    settings: Settings
    stop: anyio.Event = field(default_factory=anyio.Event)

    @property
    def socket(self) -> Path:
        return self.settings.socket_path

    async def client(self) -> AsyncClient:
        return await AsyncClient.connect(self.socket)


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[DaemonHandle]:
    """The daemon in this event loop; stopped (gracefully) when the block ends."""
    handle = DaemonHandle(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run(
                settings,
                shutdown_trigger=handle.stop.wait,
                handle_signals=False,
                task_status=task_status,
            )
        )
        try:
            yield handle
        finally:
            handle.stop.set()


@contextlib.asynccontextmanager
async def running_store(path: Path) -> AsyncIterator[Store]:
    """A store at ``path`` with its writer running in this event loop; closed (what is
    queued committed) when the block ends."""
    store = await open_store(path)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            yield store
            await store.close()
    finally:
        await store.aclose_connections()


@contextlib.contextmanager
def daemon_process(
    state_dir: Path, socket_path: Path, config: Path | None = None, log_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``schedulerd`` as a real process (for signal tests); killed by pid at the end."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    args = [sys.executable, "-m", "schedulerd.daemon", "--state-dir", str(state_dir),
            "--socket", str(socket_path)]  # fmt: skip
    if config is not None:
        args += ["--config", str(config)]
    log = open(log_path or state_dir.parent / "daemon.log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    try:
        wait_for_socket(socket_path, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import socket as _socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"schedulerd exited with {proc.returncode}")
        if path.exists():
            with _socket.socket(_socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise TimeoutError(f"schedulerd did not open {path}")
