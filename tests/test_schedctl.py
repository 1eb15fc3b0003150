"""``schedctl`` as users run it: a real process against a real daemon process.

Checks the user contract of DESIGN.md: every command with ``--json`` prints exactly one
JSON document on stdout, the human output is readable, and each class of failure has
its own exit status (0 ok, 1 wait saw a non-completed job, 2 usage, 3 daemon
unreachable, 4 unknown job, 5 illegal transition / conflict, 6 invalid input, 7 wait
timed out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import daemon_process, local_config

CONFIG = local_config()
TERMINAL = {"completed", "failed", "timeout", "lost", "cancelled", "skipped"}
# `wait --timeout` for jobs that should end at once: generous, for a loaded CI machine; the
# ctl process gets more time than the wait itself, so a timed-out wait reports status 7
WAIT = "60"
WAIT_CTL = 90.0


def start(root: Path) -> Any:
    config = root / "schedulerd.toml"
    config.write_text(CONFIG)
    return daemon_process(root / "state", root / "sd.sock", config, log_path=root / "daemon.log")


@pytest.fixture(scope="module")
def sock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One daemon process shared by the tests of this module (a process, no task group)."""
    root = tmp_path_factory.mktemp("ctl")
    with start(root):
        yield str(root / "sd.sock")


def ctl(sock: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
    return subprocess.run(
        [sys.executable, "-m", "schedulerd.cli", "--socket", sock, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def ctl_json(sock: str, *args: str, status: int = 0, timeout: float = 30) -> Any:
    """Run with --json; the exit status must be ``status`` and stdout one JSON document."""
    done = ctl(sock, "--json", *args, timeout=timeout)
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"--json stdout is not one JSON document: {done.stdout!r}") from exc
    assert done.stdout.count("\n") == 1, f"more than one line on stdout: {done.stdout!r}"
    return doc


def submit(sock: str, *args: str) -> int:
    return int(ctl_json(sock, "submit", *args)["id"])


def state_of(sock: str, jid: int) -> str:
    return str(ctl_json(sock, "show", str(jid))["state"])


def wait_state(sock: str, jid: int, wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (state := state_of(sock, jid)) != wanted:
        assert time.monotonic() < deadline, f"job {jid} is {state}, not {wanted}"
        time.sleep(0.1)


# --- daemon commands --------------------------------------------------------------------


def test_ping_and_info(sock: str) -> None:
    pong = ctl_json(sock, "ping")
    assert pong["pong"] is True and pong["protocol"] == 1
    human = ctl(sock, "ping")
    assert human.returncode == 0 and human.stdout.startswith("pong (schedulerd ")
    info = ctl_json(sock, "info")
    assert info["socket"] == sock
    assert [c["name"] for c in info["clusters"]] == ["local"]
    assert isinstance(info["pid"], int) and isinstance(info["jobs"], dict)
    human = ctl(sock, "info")
    assert human.returncode == 0
    assert f"socket:   {sock}" in human.stdout and "local" in human.stdout
    # --json may also come before the command
    assert ctl_json(sock, "ping") == json.loads(ctl(sock, "ping", "--json").stdout)


# --- jobs ------------------------------------------------------------------------------


def test_submit_wait_show_ls(sock: str, tmp_path: Path) -> None:
    jid = submit(sock, "--name", "greet", "--env", "WHO=world", "--cpus", "1", "--memory", "64M",
                 "--walltime", "5m", "--", "sh", "-c", 'echo "hello $WHO"')  # fmt: skip
    waited = ctl_json(sock, "wait", str(jid), "--timeout", WAIT, timeout=WAIT_CTL)
    assert waited == {"jobs": [{"id": jid, "state": "completed", "final": True, "exit_code": 0}],
                      "timed_out": False}  # fmt: skip
    job = ctl_json(sock, "show", str(jid))
    for key in ("id", "name", "state", "exit_code", "attempt", "cluster", "native_id", "campaign",
                "created_at", "started_at", "finished_at", "workdir", "stdout", "stderr"):  # fmt: skip
        assert key in job, key
    assert (job["name"], job["state"], job["exit_code"]) == ("greet", "completed", 0)
    assert (job["cpus"], job["memory_mb"], job["walltime_s"]) == (1, 64, 300)
    assert Path(job["stdout"]).read_text() == "hello world\n"
    human = ctl(sock, "show", str(jid))
    assert human.returncode == 0
    assert "state:        completed" in human.stdout and "name:         greet" in human.stdout
    # plain submit prints the bare id
    plain = ctl(sock, "submit", "--", "true")
    assert plain.returncode == 0 and plain.stdout.strip().isdigit()
    newest = int(plain.stdout)
    assert newest > jid
    listed = ctl_json(sock, "ls", "--limit", "1000")
    ids = [j["id"] for j in listed["jobs"]]
    assert ids == sorted(ids, reverse=True) and ids[0] == newest and jid in ids  # newest first
    assert "next" in listed
    only = ctl_json(sock, "ls", "--name", "greet")
    assert [j["id"] for j in only["jobs"]] == [jid]
    table = ctl(sock, "ls", "--state", "completed")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "ID",
        "NAME",
        "STATE",
        "EXIT",
        "TRY",
        "CLUSTER",
        "NATIVE_ID",
        "CREATED",
    ]
    assert any(
        line.split()[:3] == [str(jid), "greet", "completed"] for line in table.stdout.splitlines()
    )
    human_wait = ctl(sock, "wait", str(jid))
    assert human_wait.returncode == 0 and human_wait.stdout == ""


def test_wait_on_a_failed_job_exits_1(sock: str) -> None:
    jid = submit(sock, "--", "sh", "-c", "exit 3")
    waited = ctl_json(sock, "wait", str(jid), "--timeout", WAIT, status=1, timeout=WAIT_CTL)
    assert waited == {"jobs": [{"id": jid, "state": "failed", "final": True, "exit_code": 3}],
                      "timed_out": False}  # fmt: skip
    human = ctl(sock, "wait", str(jid))
    assert human.returncode == 1 and human.stdout.split() == [str(jid), "failed"]
    assert ctl_json(sock, "show", str(jid))["exit_code"] == 3


def test_hold_release_cancel_retry(sock: str) -> None:
    # long enough that it is still running at every cancel below, however slow the machine
    parent = submit(sock, "--name", "nap", "--", "sleep", "300")
    child = submit(sock, "--after", str(parent), "--", "true")
    assert state_of(sock, child) == "pending"
    held = ctl_json(sock, "hold", str(child))
    assert [(j["id"], j["state"]) for j in held["jobs"]] == [(child, "held")]
    version = held["jobs"][0]["version"]
    # a stale --if-version is a conflict (5) and changes nothing
    stale = ctl_json(sock, "release", str(child), "--if-version", str(version - 1), status=5)
    assert stale["error"]["code"] == -32003
    assert state_of(sock, child) == "held"
    human = ctl(sock, "release", str(child), "--if-version", str(version))
    assert human.returncode == 0 and human.stdout.split() == [str(child), "pending"]
    cancelled = ctl_json(sock, "cancel", str(parent))
    assert cancelled["jobs"][0]["state"] == "cancelled"
    assert state_of(sock, child) == "skipped"
    again = ctl_json(sock, "cancel", str(parent), status=5)
    assert again["error"]["code"] == -32002
    # retrying the parent re-arms the skipped child
    retried = ctl_json(sock, "retry", str(parent))
    assert retried["jobs"][0]["attempt"] == 2 and retried["jobs"][0]["state"] == "ready"
    assert state_of(sock, child) == "pending"
    done = ctl(sock, "cancel", str(parent), str(child))
    assert done.returncode == 0
    assert sorted(done.stdout.split()) == sorted(
        [str(parent), "cancelled", str(child), "cancelled"]
    )


def test_events_list_and_follow(sock: str) -> None:
    jid = submit(sock, "--", "true")
    ctl_json(sock, "wait", str(jid), "--timeout", WAIT, timeout=WAIT_CTL)
    log = ctl_json(sock, "events")
    assert set(log) == {"events", "cursor"}
    mine = [(e["from"], e["to"]) for e in log["events"] if e["job_id"] == jid]
    assert mine[0] == (None, "ready") and mine[-1][1] == "completed"
    assert log["cursor"] == log["events"][-1]["cursor"]
    since = ctl_json(sock, "events", "--since", str(log["cursor"]))
    assert since == {"events": [], "cursor": log["cursor"]}
    human = ctl(sock, "events", "--since", str(log["cursor"] - 1))
    assert human.returncode == 0
    assert f"job {jid}" in human.stdout and "-> completed" in human.stdout
    # --follow streams one JSON object per line as events happen
    follower = subprocess.Popen(
        [sys.executable, "-m", "schedulerd.cli", "--socket", sock, "--json", "events",
         "--follow", "--since", str(log["cursor"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        second = submit(sock, "--", "true")
        seen = []
        deadline = time.monotonic() + 30
        assert follower.stdout is not None
        while time.monotonic() < deadline:
            event = json.loads(follower.stdout.readline())
            seen.append((event["job_id"], event["to"]))
            if (second, "completed") in seen:
                break
        assert (second, "ready") in seen and (second, "completed") in seen
    finally:
        follower.kill()
        follower.communicate(timeout=5)


# --- exit statuses ------------------------------------------------------------------------


def test_usage_errors_exit_2(sock: str) -> None:
    for args in (["frobnicate"], ["submit"], ["submit", "--"], ["show"], ["show", "one"],
                 ["submit", "--env", "NOEQUALS", "--", "true"], ["wait"],
                 ["cancel", "1", "2", "--if-version", "3"]):  # fmt: skip
        done = ctl(sock, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stdout == "" and done.stderr, args


def test_daemon_not_running_exits_3(tmp_path: Path) -> None:
    missing = str(tmp_path / "nobody-here.sock")
    done = ctl(missing, "ping")
    assert done.returncode == 3 and done.stdout == ""
    assert "cannot connect" in done.stderr
    err = ctl_json(missing, "ping", status=3)
    assert err["error"]["code"] == -32000 and missing in err["error"]["message"]
    # the socket also comes from SCHEDULERD_SOCKET
    env = {**os.environ, "SCHEDULERD_SOCKET": missing}
    done = subprocess.run([sys.executable, "-m", "schedulerd.cli", "ping"], capture_output=True,
                          text=True, timeout=30, env=env)  # fmt: skip
    assert done.returncode == 3 and missing in done.stderr


def test_unknown_job_exits_4(sock: str) -> None:
    for command in ("show", "cancel", "hold", "release", "retry"):
        err = ctl_json(sock, command, "999999", status=4)
        assert err["error"]["code"] == -32001, command
        human = ctl(sock, command, "999999")
        assert human.returncode == 4 and "999999" in human.stderr, command
    assert ctl(sock, "wait", "999999").returncode == 4


def test_illegal_transition_exits_5(sock: str) -> None:
    jid = submit(sock, "--", "true")
    ctl_json(sock, "wait", str(jid), "--timeout", WAIT, timeout=WAIT_CTL)
    for command in ("cancel", "hold", "release"):
        err = ctl_json(sock, command, str(jid), status=5)
        assert err["error"]["code"] == -32002 and "completed" in err["error"]["message"], command
    human = ctl(sock, "cancel", str(jid))
    assert human.returncode == 5 and "cannot cancel a job that is completed" in human.stderr


def test_invalid_input_exits_6(sock: str) -> None:
    before = ctl_json(sock, "ls", "--limit", "1")["jobs"]
    cases = [
        (["--after", "999999"], -32004),
        (["--memory", "lots"], -32010),
        (["--walltime", "forever"], -32010),
        (["--env", "1BAD=x"], -32010),
        (["--cluster", "mars"], -32006),
        (["--cpus", "0"], -32010),
        (["--workdir", "/tmp/x\ny"], -32010),
    ]
    for options, code in cases:
        err = ctl_json(sock, "submit", *options, "--", "true", status=6)
        assert err["error"]["code"] == code, options
    human = ctl(sock, "submit", "--after", "999999", "--", "true")
    assert human.returncode == 6 and "999999" in human.stderr
    assert ctl_json(sock, "ls", "--state", "bogus", status=6)["error"]["code"] == -32602
    assert ctl_json(sock, "ls", "--limit", "1")["jobs"] == before, "a refused submit created a job"


def test_wait_timeout_exits_7(sock: str) -> None:
    jid = submit(sock, "--", "sleep", "300")  # cancelled below; never ends on its own here
    try:
        started = time.monotonic()
        waited = ctl_json(sock, "wait", str(jid), "--timeout", "0.5", status=7)
        # CLI start-up and load on top of the 0.5 s; a wait for the job would take 300 s
        assert time.monotonic() - started < 20
        assert waited["timed_out"] is True
        assert waited["jobs"][0]["id"] == jid and waited["jobs"][0]["state"] not in TERMINAL
        human = ctl(sock, "wait", str(jid), "--timeout", "0.3")
        assert human.returncode == 7 and "timed out" in human.stderr and str(jid) in human.stderr
    finally:
        ctl(sock, "cancel", str(jid))


def test_help_documents_exit_statuses(sock: str) -> None:
    done = ctl(sock, "--help")
    assert done.returncode == 0
    for status in ("0", "1", "2", "3", "4", "5", "6", "7"):
        assert f"\n  {status}  " in done.stdout, status


def test_shutdown(tmp_path: Path) -> None:
    with start(tmp_path) as proc:
        path = str(tmp_path / "sd.sock")
        assert ctl_json(path, "shutdown") == {"stopping": True}
        assert proc.wait(timeout=30) == 0
        done = ctl(path, "ping")
        assert done.returncode == 3
    with start(tmp_path) as proc:
        human = ctl(path, "shutdown")
        assert human.returncode == 0 and human.stdout.strip() == "stopping"
        assert proc.wait(timeout=30) == 0


# --- issue 6: the user's side -------------------------------------------------------------


def _many_pending(sock: str, count: int) -> int:
    """A running parent and ``count`` children waiting for it; returns the parent's id."""
    from schedulerd.client import Client

    client = Client(sock)
    try:
        parent = client.call("job.submit", {"job": {"argv": ["sleep", "300"]}})["id"]
        client.call("job.submit", {"jobs": [{"argv": ["true"], "after": [parent]}] * count})
        return int(parent)
    finally:
        client.close()


def test_closed_stdout_is_quiet_not_a_lost_daemon(tmp_path: Path) -> None:
    """`schedctl ... | head -1`: was "lost the daemon: Broken pipe", exit 3. Now exit 141
    without a word, as a command killed by SIGPIPE (each output here is > 64 KiB, more
    than a pipe holds, so schedctl is still writing when head exits)."""
    with start(tmp_path):
        sock = str(tmp_path / "sd.sock")
        parent = _many_pending(sock, 2000)
        try:
            for command in (["ls", "--limit", "2000"], ["events"], ["events", "--follow"],
                            ["--json", "events", "--follow"]):  # fmt: skip
                errors = tmp_path / "stderr"
                schedctl = " ".join([sys.executable, "-m", "schedulerd.cli", "--socket", sock,
                                     *command])  # fmt: skip
                done = subprocess.run(
                    ["bash", "-c", f'{schedctl} 2>"$1" | head -1; echo "status=${{PIPESTATUS[0]}}"',
                     "bash", str(errors)],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                lines = done.stdout.splitlines()
                assert len(lines) == 2 and lines[1] == "status=141", (command, done.stdout[-300:])
                assert errors.read_text() == "", command
            assert lines[0].startswith("{"), lines[0]
        finally:
            ctl(sock, "cancel", str(parent))


def test_a_broken_socket_to_the_daemon_is_still_exit_3(tmp_path: Path) -> None:
    """The peer stops reading after its first reply: schedctl's next request meets EPIPE,
    the same BrokenPipeError a closed stdout gives, and must still say it lost the daemon."""
    import socket
    import threading

    path = tmp_path / "fake.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    finished = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = json.loads(conn.makefile("rb").readline())
            conn.shutdown(socket.SHUT_RD)  # a send to this end now fails with EPIPE
            job = {
                "id": 1,
                "state": "running",
                "final": False,
                "exit_code": None,
                "cluster": "local",
            }
            reply = {"jsonrpc": "2.0", "id": request["id"],
                     "result": {"jobs": [job], "missing": [], "cursor": 0}}  # fmt: skip
            conn.sendall(json.dumps(reply).encode() + b"\n")
            finished.wait(60)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = ctl(str(path), "wait", "1")
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert done.stdout == ""
        assert "lost the daemon" in done.stderr and "Broken pipe" in done.stderr, done.stderr
    finally:
        finished.set()
        thread.join(timeout=10)
        listener.close()


def test_show_text_has_the_whole_spec(sock: str) -> None:
    jid = submit(sock, "--name", "spec", "--cpus", "1", "--memory", "64M", "--walltime", "1h30m",
                 "--env", "WHO=the world", "--env", "A=1", "--retries", "2", "--", "sleep", "300")  # fmt: skip
    try:
        text = ctl(sock, "show", str(jid)).stdout
        for line in ("cpus:         1", "memory:       64 MB", "walltime:     1:30:00",
                     "env:          A=1 WHO='the world'", "max_attempts: 3", "final:        no",
                     "argv:         sleep 300"):  # fmt: skip
            assert line in text.splitlines(), (line, text)
    finally:
        ctl(sock, "cancel", str(jid))
    assert "final:        yes" in ctl(sock, "show", str(jid)).stdout.splitlines()


def test_every_submit_option_has_help() -> None:
    import argparse

    from schedulerd.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    submit_parser = commands.choices["submit"]
    options = [a for a in submit_parser._actions if a.dest not in ("help", "json")]
    assert {a.dest for a in options} >= {"cluster", "queue", "name", "cpus", "memory", "walltime",
                                         "account", "workdir", "env", "after", "retries"}  # fmt: skip
    for action in options:
        assert action.help, f"submit {action.option_strings or action.dest} has no help"
    retries = next(a for a in options if a.dest == "retries")
    assert "N+1 attempts" in str(retries.help)
    text = subprocess.run([sys.executable, "-m", "schedulerd.cli", "submit", "--help"],
                          capture_output=True, text=True, timeout=30, check=False).stdout  # fmt: skip
    assert "N+1 attempts" in " ".join(text.split())


def test_ls_of_an_unknown_cluster_is_an_error(sock: str) -> None:
    human = ctl(sock, "ls", "--cluster", "nope")
    assert human.returncode == 6 and human.stdout == ""
    assert human.stderr == "schedctl: no cluster named 'nope'\n"
    err = ctl_json(sock, "ls", "--cluster", "nope", status=6)["error"]
    assert err["code"] == -32006 and err["data"] == {"clusters": ["local"]}
    assert ctl_json(sock, "ls", "--cluster", "local")["jobs"] is not None


def test_ls_of_a_cluster_removed_from_the_config_still_lists_its_jobs(tmp_path: Path) -> None:
    config = tmp_path / "schedulerd.toml"
    config.write_text(CONFIG + '\n[clusters.old]\nscheduler = "local"\npoll_interval = "0.2s"\n')
    with daemon_process(tmp_path / "state", tmp_path / "sd.sock", config):
        path = str(tmp_path / "sd.sock")
        jid = submit(path, "--cluster", "old", "--", "true")
        ctl_json(path, "wait", str(jid), "--timeout", WAIT, timeout=WAIT_CTL)
    config.write_text(CONFIG)
    with daemon_process(tmp_path / "state", tmp_path / "sd.sock", config):
        assert [j["id"] for j in ctl_json(path, "ls", "--cluster", "old")["jobs"]] == [jid]
        assert ctl(path, "ls", "--cluster", "older").returncode == 6


def test_unknown_job_messages_name_the_id_once(sock: str) -> None:
    for command in ("show", "cancel", "hold", "release", "retry", "wait"):
        human = ctl(sock, command, "999999")
        assert human.returncode == 4, command
        assert human.stderr == "schedctl: no job with id 999999\n", (command, human.stderr)


def test_unknown_dependency_says_it_is_a_dependency(sock: str) -> None:
    human = ctl(sock, "submit", "--after", "999999", "--", "true")
    assert human.returncode == 6
    assert human.stderr == "schedctl: --after 999999: no job with id 999999\n"
    err = ctl_json(sock, "submit", "--after", "999999", "--", "true", status=6)["error"]
    assert err["code"] == -32004 and err["data"] == {"missing": [999999]}
