"""Benchmark: ``job.get`` round trip while 10,000 local jobs are in flight.

    python tests/bench/bench_inflight.py [--jobs 10000] [--slots 200] [--gets 2000]

Target (ARCHITECTURE.md): p99 < 50 ms. "In flight" here means accepted and not finished: the
daemon (a real process) has one cluster ``local`` with ``max_jobs = 200``; the 10,000
jobs run ``sleep 60``, so 200 of them run and 9,800 wait ready for a slot while the
worker polls the running ones (exit files, /proc) every second. Starting 10,000
processes at once is not what the target is about and would measure the machine.

Latency is sampled once the 200 slots are full, sequentially on one connection, over
random ids of the submitted jobs. Every job process is killed at the end.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchlib import (  # isort: skip
    daemon_process,
    figure,
    finish,
    note,
    percentile,
    pyspy,
    reap_jobs,
    rss_mb,
)

from schedulerd.client import AsyncClient


def config(slots: int) -> str:
    return f"""
[clusters.local]
scheduler = "local"
max_jobs = {slots}
poll_interval = "1s"
"""


async def measure(sock: Path, pid: int, n: int, slots: int, n_gets: int, spy: str | None) -> None:
    client = await AsyncClient.connect(sock)
    try:
        jobs = [{"argv": ["sleep", "60"], "name": f"inflight-{i}"} for i in range(n)]
        t = time.perf_counter()
        ids = (await client.call("job.submit", {"jobs": jobs}, timeout=300))["ids"]
        note(f"submitted {len(ids):,} jobs in {time.perf_counter() - t:.2f}s")
        t = time.perf_counter()
        busy = 0
        while time.perf_counter() - t < 120:
            counts = (await client.call("daemon.info"))["jobs"]
            busy = counts.get("running", 0) + counts.get("queued", 0)
            if busy >= min(slots, n):
                break
            await anyio.sleep(0.2)
        figure(f"ramp.to_{slots}_slots_busy", time.perf_counter() - t, "s")
        note(f"jobs by state: {counts}")
        rng = random.Random(99)
        lat = []
        with pyspy(pid, spy):
            for jid in (rng.choice(ids) for _ in range(n_gets)):
                t0 = time.perf_counter()
                job = await client.call("job.get", {"id": jid})
                lat.append((time.perf_counter() - t0) * 1000)
                assert job["id"] == jid
        p99 = percentile(lat, 99)
        figure(f"inflight.job.get.p50({n_gets})", percentile(lat, 50), "ms")
        figure(f"inflight.job.get.p99({n_gets})", p99, "ms", target="< 50", ok=p99 < 50)
        figure("inflight.job.get.max", max(lat), "ms")
        figure("inflight.job.get.count_over_100ms", sum(x > 100 for x in lat), "gets")
        counts = (await client.call("daemon.info"))["jobs"]
        note(f"jobs by state after sampling: {counts}")
        rss, hwm = rss_mb(pid)
        figure("daemon.rss", rss, "MiB")
        figure("daemon.rss_peak(VmHWM)", hwm, "MiB")
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=200)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--pyspy", metavar="OUT", help="record the daemon with py-spy into OUT")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sd-bench-inflight-"))
    cfg = tmp / "schedulerd.toml"
    cfg.write_text(config(args.slots))
    note(f"bench_inflight: {args.jobs:,} jobs, {args.slots} local slots; dir {tmp}")
    try:
        with daemon_process(tmp / "state", tmp / "sd.sock", cfg, tmp / "daemon.log") as proc:
            anyio.run(
                measure, tmp / "sd.sock", proc.pid, args.jobs, args.slots, args.gets, args.pyspy
            )
    finally:
        # the daemon is stopped (by pid) by now; its jobs run detached and must go too
        reaped = reap_jobs(str(tmp))
        note(f"killed {reaped} leftover job session(s)")
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
