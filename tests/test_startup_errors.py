"""What the daemon says when it cannot start: one clear line on stderr (the path, what is
wrong, what to do), no traceback, a non-zero exit status, and nothing of the user's
destroyed on the way."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import structlog

from tests.harness import daemon_process


def start_daemon(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``schedulerd ARGS`` expected to exit by itself (a refused start)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULERD_", "NOTIFY_"))}
    return subprocess.run(
        [sys.executable, "-m", "schedulerd.daemon", *map(str, args)],
        capture_output=True, text=True, timeout=60, env={**environ, **(env or {})}, check=False,
    )  # fmt: skip


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode not in (0, None), proc
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


# --- the socket path -----------------------------------------------------------------


def _regular_file(path: Path) -> None:
    path.write_text("precious\n")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("precious\n")


def _symlink_to_file(path: Path) -> None:
    (path.parent / "target").write_text("precious\n")
    path.symlink_to(path.parent / "target")


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_regular_file, "a regular file"),
        (_directory, "a directory"),
        (_symlink_to_file, "a symbolic link"),
        (_dangling_symlink, "a symbolic link"),
        (_fifo, "a FIFO"),
    ],
)
def test_a_socket_path_holding_something_else_is_refused_and_left_alone(
    tmp_path: Path, make: object, kind: str
) -> None:
    """``--socket`` naming an existing file used to delete that file and bind there."""
    sock = tmp_path / "sd.sock"
    make(sock)  # type: ignore[operator]
    before = _snapshot(tmp_path)
    proc = start_daemon("--state-dir", tmp_path / "state", "--socket", sock)
    assert_one_clear_line(proc, str(sock), kind, "not a socket", "--socket")
    assert _snapshot(tmp_path) == before, "the refused start changed what was at the socket path"


def _snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` but the state dir: its type and its content/target."""
    seen: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        if "state" in path.relative_to(root).parts:
            continue
        if path.is_symlink():
            seen[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            seen[str(path)] = ("dir", "")
        elif path.is_fifo():
            seen[str(path)] = ("fifo", "")
        else:
            seen[str(path)] = ("file", path.read_text())
    return seen


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    """A socket nobody listens on (a killed daemon's) is the one thing that is removed."""
    sock = tmp_path / "sd.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock))  # bound and closed without listening: a stale socket file
    assert sock.is_socket()
    with daemon_process(tmp_path / "state", sock) as proc, socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock))
        client.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n')
        assert b'"pong":true' in client.makefile("rb").readline()
        assert proc.poll() is None


def test_a_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    sock = tmp_path / "sd.sock"
    with daemon_process(tmp_path / "state", sock) as first:
        proc = start_daemon("--state-dir", tmp_path / "other", "--socket", sock)
        assert_one_clear_line(proc, str(sock), "another daemon is listening")
        assert first.poll() is None and sock.is_socket()


# --- the state directory and the database ----------------------------------------------


def make_database(state_dir: Path, jobs: int) -> Path:
    """A database with ``jobs`` jobs, closed cleanly (its WAL folded back into it)."""
    from schedulerd.state.models import JobSpec, NewJob
    from schedulerd.state.store import open_store

    path = state_dir / "schedulerd.sqlite3"

    async def fill() -> None:
        store = await open_store(path)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(store.run_writer)
                spec = JobSpec(argv=("sh", "-c", "echo a fairly ordinary job"), env={"K": "V"})
                await store.create_jobs(
                    [
                        NewJob(name=f"j{i}", cluster="local", workdir="/w/{id}", spec=spec)
                        for i in range(jobs)
                    ]
                )
                await store.close()
        finally:
            await store.aclose_connections()

    anyio.run(fill)
    assert not Path(f"{path}-wal").exists()
    return path


def quick_check(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        db.close()


def test_random_bytes_in_the_middle_of_the_database_refuse_the_start(tmp_path: Path) -> None:
    """The daemon used to start on it, accept jobs, and fail later ("database disk image
    is malformed"), with acknowledged jobs in a damaged file."""
    state = tmp_path / "state"
    db = make_database(state, 3000)
    size = db.stat().st_size
    page = 4096
    middle = (size // page // 2) * page
    noise = random.Random(6).randbytes(4 * page)
    with open(db, "r+b") as fh:  # four whole pages in the middle: headers and cells
        fh.seek(middle)
        fh.write(noise)
    assert quick_check(db) != ["ok"], "the damage must be one that quick_check sees"
    damaged = db.read_bytes()
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(db), "damaged", ".recover", "backup")
    assert db.read_bytes() == damaged, "a refused database must be left as it was"
    assert not (tmp_path / "sd.sock").exists()


def test_a_truncated_database_refuses_the_start_without_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = make_database(state, 3000)
    with open(db, "r+b") as fh:
        fh.truncate(db.stat().st_size // 2)
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(db), "damaged")


def test_a_file_that_is_not_a_database_refuses_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "schedulerd.sqlite3").write_bytes(random.Random(7).randbytes(10_000))
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(state / "schedulerd.sqlite3"), "damaged")


def test_a_database_path_that_is_a_directory_refuses_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "schedulerd.sqlite3").mkdir(parents=True)
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(state / "schedulerd.sqlite3"), "is a directory", "move it away")


def test_a_newer_schema_refuses_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = make_database(state, 1)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 999")
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, "schema version 999", "newer", "--state-dir")


def test_a_state_dir_that_is_a_file_refuses_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(state), "not a directory", "--state-dir")
    proc = start_daemon("--state-dir", state / "below", "--socket", tmp_path / "sd.sock")
    assert_one_clear_line(proc, str(state / "below"), "Not a directory", "--state-dir")
    assert state.read_text() == "not a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any directory")
def test_an_unreadable_state_dir_refuses_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0)
    try:
        proc = start_daemon("--state-dir", state, "--socket", tmp_path / "sd.sock")
    finally:
        state.chmod(0o700)
    assert_one_clear_line(proc, str(state), "Permission denied", "--state-dir")


def test_a_socket_path_too_long_refuses_the_start(tmp_path: Path) -> None:
    sock = tmp_path / ("x" * 120)
    proc = start_daemon("--state-dir", tmp_path / "state", "--socket", sock)
    assert_one_clear_line(proc, str(sock), "too long", "--socket")


def test_a_bad_config_refuses_the_start_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[clusters.x]\nscheduler = "local"\nmax_jobs = "many"\n')
    proc = start_daemon("--config", config, "--state-dir", tmp_path / "state")
    assert proc.returncode == 2
    assert_one_clear_line(proc, "max_jobs")
    config.write_text("[clusters.x\n")
    assert_one_clear_line(
        start_daemon("--config", config, "--state-dir", tmp_path / "state"), str(config)
    )
    missing = tmp_path / "missing.toml"
    assert_one_clear_line(
        start_daemon("--config", missing, "--state-dir", tmp_path / "state"), str(missing)
    )


def test_the_start_up_check_is_bounded_in_time(tmp_path: Path) -> None:
    """A check that does not finish within its budget (a huge database on a cold disk)
    is logged and the daemon starts: a restart must stay within its 5 s target."""
    from schedulerd.state.store import open_store

    db = make_database(tmp_path / "state", 20_000)

    async def open_with_no_time() -> int:
        with structlog.testing.capture_logs() as logs:
            store = await open_store(db, check_seconds=0.0)
        try:
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
                "store_check_unfinished"
            ]
            return (await store.count_by_state())["ready"]
        finally:
            await store.aclose_connections()

    assert anyio.run(open_with_no_time) == 20_000
