"""Benchmark: jobs driven end to end through a fake head over one SSH connection.

    python tests/bench/bench_e2e.py [--system slurm] [--jobs 10000] [--batch 500]
                                    [--poll 0.5] [--pyspy OUT] [--keep]

Targets (ARCHITECTURE.md "Performance targets"): >= 500 jobs/s end to end, and within 10% of
a bare shell loop of the same submit command on that head (ratio <= 1.1).

The head is the fake batch system (tests/fakebatch) in *instant* mode: its submit shim is
a few shell builtins (no Python start-up) and every job is finished, exit 0, the moment
it is submitted. It is reached through the in-process asyncssh server of tests/sshserver
(127.0.0.1, in this process). The daemon is a real process (``python -m
schedulerd.daemon``) with one cluster of ``--system``: ``max_jobs`` = ``--jobs``,
``submit_batch`` = ``--batch``, ``poll_interval`` = ``--poll``.

1. End to end: ONE ``job.submit`` call with all jobs (``argv = ["true"]``); the clock runs
   from sending it until ``daemon.info`` counts every job ``completed``.
2. Bare loop: over ONE SSH session on the same head (daemon stopped), one ``sh -s``
   program that, for each job, writes the same script the daemon writes (the dialect's
   ``render_script`` of the same request, plus ``extra_files`` for HTCondor) with a
   heredoc and runs the same submit command (``dialect.submit_argv``), e.g.
   ``cat > f <<'EOF' ... EOF; sbatch --parsable f``.

ratio = end-to-end time / bare-loop time. Also printed: how the head's time splits
between submit programs and polls (each SSH command is timed on the server side).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from benchlib import figure, finish, note, pyspy, spawn_daemon  # isort: skip

from schedulerd.client import AsyncClient
from schedulerd.daemon import create_dialect
from schedulerd.drivers.base import JobRequest
from schedulerd.drivers.ssh import SSHTransport
from tests.fakebatch.core import FakeHead
from tests.sshserver import SSHTestServer, running_ssh_server

USER = getpass.getuser()


def config_text(
    system: str, server: SSHTestServer, workdir: Path, jobs: int, batch: int, poll: float
) -> str:
    return f"""
log_level = "info"
retry_base = "1s"
[limits]
max_active = {jobs}
[clusters.head]
scheduler = "{system}"
host = "127.0.0.1"
port = {server.port}
user = "{USER}"
identity_file = "{server.client_key_path}"
known_hosts = "{server.known_hosts_path}"
workdir = "{workdir}"
max_jobs = {jobs}
submit_batch = {batch}
poll_interval = "{poll}s"
exit_read_timeout = "60s"
command_timeout = "600s"
connect_timeout = "10s"
"""


def command_kind(command: str) -> str:
    if command.startswith("sh -s"):
        return "submit program (sh -s)"
    if "@@schedulerd-exit-file" in command[:400]:
        return "exit-file read"
    words = [w for w in command[:200].split() if w != "env" and "=" not in w]
    return f"{words[0] if words else '?'} (poll/other)"


def time_commands(server: SSHTestServer) -> dict[str, list[float]]:
    """Wrap the server's per-command runner to record each command's duration by kind."""
    durations: dict[str, list[float]] = defaultdict(list)
    original = server._run_child

    async def timed(process: Any, command: str) -> int:
        start = time.perf_counter()
        try:
            return await original(process, command)
        finally:
            durations[command_kind(command)].append(time.perf_counter() - start)

    server._run_child = timed  # type: ignore[method-assign]
    return durations


async def end_to_end(args: argparse.Namespace, tmp: Path, server: SSHTestServer) -> float:
    workdir = tmp / "remote"
    config = tmp / "schedulerd.toml"
    config.write_text(config_text(args.system, server, workdir, args.jobs, args.batch, args.poll))
    durations = time_commands(server)
    stack = contextlib.ExitStack()
    run = await anyio.to_thread.run_sync(
        stack.enter_context,
        spawn_daemon(tmp / "state", tmp / "sd.sock", config, tmp / "daemon.log"),
    )
    try:
        client = await AsyncClient.connect(run.socket_path)
        try:
            await client.call("daemon.ping")
            # let the worker connect and finish its first poll before the clock starts
            deadline = time.monotonic() + 30
            while server.exec_count < 2 and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            await anyio.sleep(args.poll * 2)
            durations.clear()
            execs_before = server.exec_count
            jobs = [{"argv": ["true"]} for _ in range(args.jobs)]
            with pyspy(run.proc.pid, args.pyspy):
                t0 = time.perf_counter()
                reply = await client.call("job.submit", {"jobs": jobs}, timeout=600)
                t_accepted = time.perf_counter() - t0
                assert len(reply["ids"]) == args.jobs
                t_queued = t_all = float("nan")
                last = ""
                while True:
                    info = await client.call("daemon.info")
                    counts = {k: v for k, v in info["jobs"].items() if v}
                    now = time.perf_counter() - t0
                    waiting = (
                        counts.get("ready", 0)
                        + counts.get("submitting", 0)
                        + counts.get("pending", 0)
                    )
                    if waiting == 0 and math.isnan(t_queued):
                        t_queued = now
                    if counts.get("completed", 0) >= args.jobs:
                        t_all = now
                        break
                    bad = {
                        k: v
                        for k, v in counts.items()
                        if k in ("failed", "lost", "cancelled", "timeout")
                    }
                    if bad:
                        raise SystemExit(f"jobs ended badly: {counts}")
                    if now > args.timeout:
                        raise SystemExit(f"not all completed after {args.timeout}s: {counts}")
                    text = str(counts)
                    if text != last and args.verbose:
                        note(f"{now:7.2f}s {text}")
                        last = text
                    await anyio.sleep(0.05)
        finally:
            await client.aclose()
    finally:
        await anyio.to_thread.run_sync(stack.close)
    rate = args.jobs / t_all
    note(f"job.submit answered after {t_accepted:.2f}s; all jobs submitted (none ready/submitting) "
         f"after {t_queued:.2f}s; all completed after {t_all:.2f}s")  # fmt: skip
    figure("e2e.jobs_per_s", rate, "jobs/s", target=">= 500", ok=rate >= 500)
    figure("e2e.time_to_all_completed", t_all, "s")
    figure("e2e.ssh_commands", server.exec_count - execs_before, "cmds")
    for kind, values in sorted(durations.items()):
        note(f"head time in {kind}: {len(values)} commands, {sum(values):.2f}s total, "
             f"max {max(values):.2f}s")  # fmt: skip
    busy = sum(sum(v) for v in durations.values())
    note(f"head busy (sum of command durations, may overlap): {busy:.2f}s of {t_all:.2f}s")
    return t_all


def bare_loop_program(system: str, directory: Path, jobs: int) -> str:
    """The same scripts and submit commands, as one plain shell program."""
    dialect = create_dialect(system)
    lines = [
        f"mkdir -p {shlex.quote(str(directory))} && cd {shlex.quote(str(directory))} || exit 1"
    ]
    for i in range(1, jobs + 1):
        request = JobRequest(
            job_id=i, attempt=1, name=f"sd-{i}-1", argv=("true",), workdir=str(directory)
        )
        files = {
            request.script_path: dialect.render_script(request),
            **dialect.extra_files(request),
        }
        if i == 1:
            lines.append(f"mkdir -p {shlex.quote(request.control_dir)}")
        for path, content in files.items():
            lines += [f"cat > {shlex.quote(path)} <<'BENCH_EOF'", content.rstrip("\n"), "BENCH_EOF"]
        lines.append(shlex.join(dialect.submit_argv(request)))
    return "\n".join(lines) + "\n"


async def bare_loop(args: argparse.Namespace, tmp: Path, server: SSHTestServer) -> float:
    program = bare_loop_program(args.system, tmp / "bare", args.jobs)
    transport = SSHTransport(server.options(max_channels=1))
    try:
        await transport.run("true", timeout=30)  # connect outside the clock
        t0 = time.perf_counter()
        res = await transport.run("sh -s", input=program, timeout=3600)
        elapsed = time.perf_counter() - t0
    finally:
        await transport.aclose()
    dialect = create_dialect(args.system)
    accepted = 0
    for line in res.stdout.splitlines():
        with contextlib.suppress(Exception):
            dialect.parse_submit(line + "\n", "", 0)
            accepted += 1
    if res.exit_status != 0 or accepted < args.jobs:
        raise SystemExit(f"bare loop: exit {res.exit_status}, {accepted} ids; {res.stderr[-500:]}")
    figure("bare_loop.time", elapsed, "s")
    figure("bare_loop.jobs_per_s", args.jobs / elapsed, "jobs/s")
    note(f"bare loop program: {len(program) / 1e6:.1f} MB in one SSH session")
    return elapsed


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    bin_dir = tmp / "bin"
    FakeHead.create(tmp / "head", bin_dir, flavor=args.system, user=USER, mode="instant")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    async with running_ssh_server(tmp, env=env) as server:
        ours = await end_to_end(args, tmp, server)
        bare = await bare_loop(args, tmp, server)
    ratio = ours / bare
    figure("e2e.ratio_to_bare_loop", ratio, "x", target="<= 1.1", ok=ratio <= 1.1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--system", default="slurm", choices=("pbspro", "torque", "lsf", "htcondor", "slurm")
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--batch", type=int, default=500, help="submit_batch (jobs per submit command)"
    )
    parser.add_argument("--poll", type=float, default=0.5, help="poll_interval in seconds")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--pyspy", metavar="OUT", help="record the daemon with py-spy into OUT")
    parser.add_argument("--verbose", action="store_true", help="print job counts as they change")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sd-bench-e2e-"))
    note(f"bench_e2e: {args.jobs:,} {args.system} jobs, submit_batch {args.batch}, "
         f"poll {args.poll}s, fake head in instant mode over one SSH connection; dir {tmp}")  # fmt: skip
    try:
        anyio.run(main_async, args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
