"""What the daemon says when it cannot start: one clear line on stderr (the path, what is
wrong, what to do), no traceback, a non-zero exit status, and nothing of the user's
destroyed on the way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
