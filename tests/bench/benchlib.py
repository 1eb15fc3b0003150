"""Shared helpers for the on-demand benchmarks in tests/bench (not collected by pytest).

* ``spawn_daemon``: ``schedulerd`` as a real process with fine-grained readiness timing;
  stopped by pid (SIGTERM, then SIGKILL) when the block ends.
* ``figure``: one printed line per measured figure: name, value, unit, target, PASS/MISS.
* ``reap_jobs``: kill every local job process started under a bench directory (local jobs
  run in sessions of their own and outlive the daemon by design).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from schedulerd.client import Client, RpcError  # noqa: E402 -- needs ROOT on sys.path first
from tests.harness import daemon_process  # noqa: E402 -- likewise

__all__ = [
    "ROOT",
    "DaemonRun",
    "daemon_process",
    "figure",
    "percentile",
    "reap_jobs",
    "rss_mb",
    "spawn_daemon",
]

MISSES: list[str] = []


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    target: str | None = None,
    ok: bool | None = None,
) -> None:
    """Print one figure; ``target`` like ``">= 20000"``; ok None means informational."""
    verdict = "INFO" if ok is None else ("PASS" if ok else "MISS")
    if ok is False:
        MISSES.append(name)
    shown = f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3f}"
    tgt = f"target {target} {unit}" if target else "target -"
    print(f"{name:<42} {shown:>12} {unit:<8} {tgt:<26} {verdict}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc/<pid>/status."""
    rss = hwm = float("nan")
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc/<pid>/stat.

    On a shared VM the wall clock also counts the time the host gave to others; CPU
    time mostly does not, so it tells a slower daemon from a busier machine."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests (all CPUs), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


@dataclass
class DaemonRun:
    proc: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path
    started: float  # time.time() just before Popen
    started_mono: float
    socket_after: float = float("nan")  # seconds from start until connect() succeeded
    ping_after: float = float("nan")  # seconds from start until daemon.ping answered

    def log_event_after(self, event: str, timeout: float = 5.0) -> float:
        """Seconds from process start to the first log line with this event (its own
        timestamp), or nan when it never appears."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if f'"{event}"' not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError):
                        obj = json.loads(line)
                        if obj.get("event") == event:
                            stamp = datetime.fromisoformat(obj["timestamp"])
                            return stamp.timestamp() - self.started
            if time.monotonic() > deadline:
                return float("nan")
            time.sleep(0.05)


def _ping_once(path: Path) -> bool:
    """Connect and ask daemon.ping with the blocking client; True when it answered."""
    try:
        with Client(path, timeout=5) as client:
            return bool(client.call("daemon.ping")["pong"])
    except (OSError, RpcError):
        return False


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


@contextlib.contextmanager
def spawn_daemon(
    state_dir: Path, socket_path: Path, config: Path, log_path: Path, *, timeout: float = 120.0
) -> Iterator[DaemonRun]:
    """Start ``python -m schedulerd.daemon``; return once daemon.ping answers.

    Polls every 5 ms, so the readiness figures are accurate to a few ms. The process is
    stopped by pid at the end: SIGTERM, 15 s grace, then SIGKILL.
    """
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    args = [sys.executable, "-m", "schedulerd.daemon", "--state-dir", str(state_dir),
            "--socket", str(socket_path), "--config", str(config)]  # fmt: skip
    log = open(log_path, "ab")
    started = time.time()
    mono = time.monotonic()
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=str(ROOT))
    run = DaemonRun(proc, socket_path, log_path, started, mono)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"schedulerd exited with {proc.returncode}; see {log_path}")
            if time.monotonic() - mono > timeout:
                raise TimeoutError(f"schedulerd not ready after {timeout}s; see {log_path}")
            if socket_path.exists():
                if run.socket_after != run.socket_after and _connectable(socket_path):
                    run.socket_after = time.monotonic() - mono
                if _ping_once(socket_path):
                    run.ping_after = time.monotonic() - mono
                    break
            time.sleep(0.005)
        yield run
    finally:
        stop_pid(proc)
        log.close()


def stop_pid(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[3])


def reap_jobs(marker: str) -> int:
    """Kill every process in a session whose member's command line mentions ``marker``
    (the bench's temporary directory: local job wrappers run ``sh <dir>/.../script``).
    Returns how many processes were signalled."""
    me = os.getpid()
    sessions: set[int] = set()
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in cmdline:
            sid = _session_of(int(entry))
            if sid is not None and sid != _session_of(me):
                sessions.add(sid)
    if not sessions:
        return 0
    victims = [
        int(e) for e in os.listdir("/proc") if e.isdigit() and _session_of(int(e)) in sessions
    ]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(0.5)
        victims = [p for p in victims if os.path.exists(f"/proc/{p}")]
        if not victims:
            break
    return len(sessions)


def finish() -> int:
    """Exit status: 1 when a figure missed its target."""
    if MISSES:
        print(f"# MISSED: {', '.join(MISSES)}", flush=True)
        return 1
    print("# all targets met", flush=True)
    return 0


@contextlib.contextmanager
def pyspy(pid: int, out: str | None) -> Iterator[None]:
    """Sample the daemon with ``py-spy record`` (all threads, incl. aiosqlite's) while the
    block runs; writes collapsed stacks to ``out``. No-op when ``out`` is None."""
    if not out:
        yield
        return
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--threads",
            "--output",
            out,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        note(f"py-spy samples written to {out} (summarise: python tests/bench/spysum.py {out})")
