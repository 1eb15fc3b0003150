"""The README's five-minute tour, run line by line as a person types it (issue 6).

The tour's ``sh`` block is fed to one bash, a line at a time, against a real daemon on its
embedded default config. Between lines the test plays a person at a keyboard: it waits
until no job is on its way to running any more (nothing ``ready``, ``submitting`` or
``queued``), then pauses. Every command of every line must succeed; the line that streams
(its comment says "Ctrl-C to stop") is stopped with SIGINT once it has printed an event,
and must then end as Ctrl-C ends it (status 130). ``schedctl shutdown`` comes last and the
daemon must then exit cleanly.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from schedulerd.client import Client
from tests.harness import daemon_process

README = Path(__file__).resolve().parents[1] / "README.md"
INTERRUPTED = "(Ctrl-C to stop)"  # the README comment of a line that runs until stopped
ACTIVATE = ". .venv/bin/activate"  # the tour's first line: the environment schedctl is in
HUMAN_PAUSE = 2.0  # seconds between lines (a quick typist); the tour must not need haste
DONE = "__tour_line_done__"


def tour_lines(text: str) -> list[str]:
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    return [
        line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_tour_has_the_lines_it_shows() -> None:
    lines = tour_lines(README.read_text(encoding="utf-8"))
    assert lines[0].startswith(ACTIVATE) and lines[1].startswith("schedctl ping")
    assert lines[-1].startswith("schedctl shutdown")
    assert sum(INTERRUPTED in line for line in lines) == 1
    for command in ("hold", "release", "cancel", "retry", "wait", "show", "ls", "info"):
        assert any(f"schedctl {command} " in f"{line} " for line in lines), command


class Shell:
    """One bash reading commands from a pipe; what failed is appended to a file by an ERR
    trap (a failure inside ``$(...)`` too), with its status."""

    def __init__(self, env: dict[str, str], fails: Path) -> None:
        self.fails = fails
        fails.write_text("")
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, bufsize=1,
        )  # fmt: skip
        self.stderr: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        self.send("set -E -o pipefail")
        self.send(f"trap 'echo \"$? $BASH_COMMAND\" >> {fails}' ERR")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def run(self, line: str) -> None:
        """Type one line (its stdin is not ours: nothing in the tour reads it)."""
        self.send("{ " + line + "\n} </dev/null; echo " + DONE)

    def read_until(self, wanted: str, timeout: float = 60) -> list[str]:
        """Lines of stdout up to the one containing ``wanted`` (a thread keeps the
        deadline: readline has none)."""
        assert self.proc.stdout is not None
        out: list[str] = []
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            while True:
                line = self.proc.stdout.readline()
                assert line, (
                    f"bash ended while waiting for {wanted!r}; stdout {out}, stderr {self.stderr}"
                )
                out.append(line.rstrip("\n"))
                if wanted in line:
                    return out
        finally:
            timer.cancel()

    def failures(self) -> list[str]:
        text = self.fails.read_text()
        self.fails.write_text("")
        return text.splitlines()

    def interrupt_child(self) -> None:
        """Ctrl-C for the command bash is running now."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGINT)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def settle(sock: str, timeout: float = 60) -> None:
    """Until every job that can start has started (or ended): what a person's pause gives."""
    deadline = time.monotonic() + timeout
    while True:
        client = Client(sock)
        try:
            moving = client.call(
                "job.list", {"state": ["ready", "submitting", "queued"], "limit": 1}
            )
        finally:
            client.close()
        if not moving["jobs"]:
            return
        assert time.monotonic() < deadline, (
            f"still on its way after {timeout}s: {moving['jobs'][0]}"
        )
        time.sleep(0.1)


def test_the_readme_tour_works_typed_by_hand(tmp_path: Path) -> None:
    lines = tour_lines(README.read_text(encoding="utf-8"))
    sock = tmp_path / "sd.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # schedctl
    env["SCHEDULERD_SOCKET"] = str(sock)
    transcript: list[str] = []
    with daemon_process(tmp_path / "state", sock, config=None) as daemon:  # embedded default
        shell = Shell(env, tmp_path / "failed")
        try:
            for line in lines:
                if line.startswith(ACTIVATE):
                    # the environment this test runs in (a clone's .venv under .ci/run)
                    activate = Path(sys.executable).parent / "activate"
                    if activate.exists():
                        shell.run(f". {shlex.quote(str(activate))}")
                        shell.read_until(DONE)
                    continue
                shell.run(line)
                if INTERRUPTED in line:
                    out = shell.read_until(" -> ")  # it streams: stop it once it has shown an event
                    shell.interrupt_child()
                    out += shell.read_until(DONE)
                    expected = [f"130 {line.split('#')[0].strip()}"]
                else:
                    out = shell.read_until(DONE)
                    expected = []
                transcript += [f"$ {line}", *out]
                failed = shell.failures()
                assert failed == expected, (
                    f"tour line failed: {line}\n  ERR trap: {failed}\n  stdout: {out}\n"
                    f"  stderr: {''.join(shell.stderr[-20:])}"
                )
                if line.startswith("schedctl shutdown"):
                    break
                settle(str(sock))
                time.sleep(HUMAN_PAUSE)
        finally:
            shell.close()
        assert daemon.wait(timeout=30) == 0, (
            "the daemon did not stop cleanly at `schedctl shutdown`"
        )
    text = "\n".join(transcript)
    assert "\nhi\n" in text, text  # the cat line printed the job's output
    assert re.search(r"^\d+\theld$", text, re.MULTILINE) and re.search(
        r"^\d+\tcancelled$", text, re.MULTILINE
    )
    assert "state:        skipped" in text, text
    assert "".join(shell.stderr) == "", shell.stderr
