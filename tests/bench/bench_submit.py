"""Benchmark: jobs/s accepted by ONE ``job.submit`` call of N jobs over the Unix socket.

    python tests/bench/bench_submit.py [--jobs 100000] [--spec typical|minimal] [--repeat 3]

Target (ARCHITECTURE.md "Performance targets"): >= 20,000 jobs/s for 100,000 jobs.
The clock runs from the first byte of the request sent to the whole reply received;
the request line is encoded before the clock starts. Each repetition starts a fresh
daemon on an empty database; the target is judged on the best repetition (noise on a
shared machine only ever slows a run down), and the median is printed beside it with
the daemon's CPU seconds per call and the host's steal time during it. The daemon is a real process
(tests.harness.daemon_process) whose only cluster is ``local`` with ``max_jobs = 1``
and ``[limits] max_active = 1``; the jobs run ``true``, so at most one runs at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchlib import (  # isort: skip
    cpu_seconds,
    daemon_process,
    figure,
    finish,
    note,
    pyspy,
    reap_jobs,
    rss_mb,
    steal_seconds,
)

from schedulerd.client import AsyncClient

CONFIG = """
log_level = "info"
[limits]
max_active = 1
[clusters.local]
scheduler = "local"
max_jobs = 1
poll_interval = "1s"
"""


def job_spec(i: int, kind: str) -> dict[str, object]:
    if kind == "minimal":
        return {"argv": ["true"]}
    # what a campaign generator typically sends: a name, resources and a little env
    return {
        "argv": ["true", "--index", str(i)],
        "name": f"bench-{i}",
        "cpus": 1,
        "memory": "2G",
        "walltime": "10m",
        "env": {"BENCH_INDEX": str(i), "OMP_NUM_THREADS": "1"},
    }


async def measure(
    sock: Path, n: int, kind: str, pid: int, spy: str | None, runs: list[dict[str, float]]
) -> None:
    client = await AsyncClient.connect(sock)
    try:
        await client.call("daemon.ping")
        t = time.perf_counter()
        request = {"jsonrpc": "2.0", "id": 1, "method": "job.submit",
                   "params": {"jobs": [job_spec(i, kind) for i in range(n)]}}  # fmt: skip
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        encode_s = time.perf_counter() - t
        note(
            f"request: {n:,} jobs, {len(line) / 1e6:.1f} MB ({kind} spec), encoded in {encode_s:.2f}s"
        )
        client.next_id = 2
        rss_before, _ = rss_mb(pid)
        with pyspy(pid, spy):
            cpu0, steal0 = cpu_seconds(pid), steal_seconds()
            t0 = time.perf_counter()
            await client.send_raw(line)
            t_sent = time.perf_counter()
            reply = await client.read_reply(timeout=600)
            elapsed = time.perf_counter() - t0
            cpu, steal = cpu_seconds(pid) - cpu0, steal_seconds() - steal0
        if "error" in reply:
            raise SystemExit(f"job.submit failed: {reply['error']}")
        ids = reply["result"]["ids"]
        assert len(ids) == n, len(ids)
        note(f"request fully written after {t_sent - t0:.2f}s; reply: {len(ids):,} ids")
        rate = n / elapsed
        note(f"run {len(runs) + 1}: {rate:,.0f} jobs/s, {elapsed:.2f} s, daemon CPU {cpu:.2f} s,"
             f" host steal {steal:.2f} s")  # fmt: skip
        runs.append({"rate": rate, "elapsed": elapsed, "cpu": cpu, "steal": steal})
        # the daemon settles (frees request buffers) before we look at its memory
        await anyio.sleep(1.0)
        job = await client.call("job.get", {"id": ids[-1]})
        assert job["state"] in ("ready", "submitting", "queued", "running", "completed"), job
        rss, hwm = rss_mb(pid)
        figure("daemon.rss_before_submit", rss_before, "MiB")
        figure("daemon.rss_after_submit", rss, "MiB")
        figure("daemon.rss_peak(VmHWM)", hwm, "MiB")
        info = await client.call("daemon.info")
        note(f"jobs by state after the call: {info['jobs']}")
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--spec", choices=("typical", "minimal"), default="typical")
    parser.add_argument("--pyspy", metavar="OUT", help="record the daemon with py-spy into OUT")
    parser.add_argument("--repeat", type=int, default=3, help="fresh daemons, one call each")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    note(f"bench_submit: {args.jobs:,} jobs in one job.submit call, {args.repeat} run(s)")
    runs: list[dict[str, float]] = []
    for _ in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="sd-bench-submit-"))
        config = tmp / "schedulerd.toml"
        config.write_text(CONFIG)
        try:
            with daemon_process(tmp / "state", tmp / "sd.sock", config, tmp / "daemon.log") as proc:
                anyio.run(
                    measure, tmp / "sd.sock", args.jobs, args.spec, proc.pid, args.pyspy, runs
                )
        finally:
            reaped = reap_jobs(str(tmp))
            if reaped:
                note(f"killed {reaped} leftover job session(s)")
            if args.keep:
                note(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    best = max(runs, key=lambda r: r["rate"])
    median = statistics.median(r["rate"] for r in runs)
    big = args.jobs >= 100_000
    figure(
        "submit.accept_rate(best)",
        best["rate"],
        "jobs/s",
        target=">= 20000",
        ok=best["rate"] >= 20_000 if big else None,
    )
    figure("submit.accept_rate(median)", median, "jobs/s")
    figure("submit.call_time(best)", best["elapsed"], "s")
    figure("submit.daemon_cpu(best run)", best["cpu"], "s")
    figure("submit.jobs_per_daemon_cpu_second(median)",
           statistics.median(args.jobs / r["cpu"] for r in runs if r["cpu"] > 0), "jobs/s")  # fmt: skip
    return finish()


if __name__ == "__main__":
    sys.exit(main())
