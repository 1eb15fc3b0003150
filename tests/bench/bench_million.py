"""Benchmark: the daemon with 1,000,000 jobs in its database.

    python tests/bench/bench_million.py [--jobs 1000000] [--db /tmp/schedulerd-bench-1m]
                                        [--mode owned|idle] [--reseed] [--pyspy OUT]

1. Seeds the database (once; cached under --db, which is the daemon's state directory)
   straight through the store: ``open_store`` + ``Store.create_jobs`` in chunks of 50,000
   with ``store.run_writer`` running in an anyio task group. Prints the seeding rate.
2. Starts ``schedulerd`` as a real process on it and reports:
   restart-to-ready (process start until ``daemon.ping`` answers; also until the
   ``daemon_ready`` log line, which is where READY=1 goes to systemd)   target < 5 s
   ``job.get`` p50/p99 over 2,000 random ids                            target p99 < 50 ms
   daemon RSS (VmRSS) after those gets                                  target < 300 MiB
   ``job.list`` with a state filter, paging with ``before``             (informational)
   ``daemon.info`` (counts jobs by state)                               (informational)

Modes (see README.md): ``owned`` (default) configures cluster ``local`` -- the cluster the
seeded jobs belong to -- with ``max_jobs = 1`` and ``[limits] max_active = 1``, so the
daemon really owns the million ready jobs (its worker queries run against them) but runs
at most one at a time; the job command is ``true``. ``idle`` configures only a cluster
named ``other``: the seeded jobs belong to a cluster the daemon does not know, so no
worker ever looks at them (they just sit there) -- the floor for the same figures.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchlib import (  # isort: skip
    figure,
    finish,
    note,
    percentile,
    pyspy,
    reap_jobs,
    rss_mb,
    spawn_daemon,
)
from schedulerd.client import AsyncClient
from schedulerd.state.models import JobSpec, NewJob
from schedulerd.state.store import open_store

CHUNK = 50_000
SEED_MARK = "bench-seeded.json"
SEED_FORMAT = 1  # bump when the seeded rows change

CONFIGS = {
    "owned": """
[limits]
max_active = 1
[clusters.local]
scheduler = "local"
max_jobs = 1
poll_interval = "1s"
""",
    "idle": """
[clusters.other]
scheduler = "local"
max_jobs = 1
poll_interval = "1s"
""",
}


def new_job(i: int, workdir: str) -> NewJob:
    # the normalised spec jobspec._row stores for a typical campaign job
    return NewJob(
        name=f"sim-{i}",
        cluster="local",
        workdir=f"{workdir}/{{id}}",
        spec=JobSpec(
            argv=("true", "--seed", str(i), "--out", f"results/{i}.h5"),
            env={"BENCH_INDEX": str(i), "OMP_NUM_THREADS": "1"},
            cpus=1,
            memory_mb=2048,
            walltime_s=3600,
        ),
        max_attempts=2,
        campaign="bench-1m",
        step="sim",
        idx=i,
    )


async def seed(state_dir: Path, n: int) -> None:
    db_path = state_dir / "schedulerd.sqlite3"
    workdir = str(state_dir / "jobs")
    store = await open_store(db_path)
    t0 = time.perf_counter()
    done = 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run_writer)
            try:
                while done < n:
                    size = min(CHUNK, n - done)
                    rows = [new_job(i, workdir) for i in range(done, done + size)]
                    await store.create_jobs(rows)
                    done += size
                    rate = done / (time.perf_counter() - t0)
                    if done % 200_000 == 0 or done == n:
                        note(f"seeded {done:,}/{n:,} ({rate:,.0f} jobs/s)")
            finally:
                await store.close()
    finally:
        await store.aclose_connections()
    elapsed = time.perf_counter() - t0
    figure("seed.rate(create_jobs,50k chunks)", n / elapsed, "jobs/s")
    figure("seed.time", elapsed, "s")
    (state_dir / SEED_MARK).write_text(json.dumps({"jobs": n, "format": SEED_FORMAT}))


def ensure_seeded(state_dir: Path, n: int, reseed: bool) -> None:
    mark = state_dir / SEED_MARK
    if not reseed and mark.exists():
        meta = json.loads(mark.read_text())
        if meta.get("jobs") == n and meta.get("format") == SEED_FORMAT:
            note(f"using the seeded database in {state_dir} (--reseed to rebuild)")
            return
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    note(f"seeding {n:,} jobs into {state_dir} (cached for later runs)")
    anyio.run(seed, state_dir, n)


async def timed(
    client: AsyncClient, method: str, params: dict[str, object]
) -> tuple[float, object]:
    t = time.perf_counter()
    result = await client.call(method, params)
    return (time.perf_counter() - t) * 1000, result


async def measure(sock: Path, pid: int, n_gets: int, spy: str | None) -> None:
    client = await AsyncClient.connect(sock)
    try:
        with pyspy(pid, spy):
            top = (await client.call("job.list", {"limit": 1}))["jobs"][0]["id"]
            rng = random.Random(1234)
            ids = [rng.randint(1, top) for _ in range(n_gets)]
            lat = []
            for jid in ids:
                ms, job = await timed(client, "job.get", {"id": jid})
                assert job["id"] == jid  # type: ignore[index]
                lat.append(ms)
            p99 = percentile(lat, 99)
            figure(f"job.get.p50({n_gets} random ids)", percentile(lat, 50), "ms")
            figure(f"job.get.p99({n_gets} random ids)", p99, "ms", target="< 50", ok=p99 < 50)
            figure("job.get.max", max(lat), "ms")
            figure("job.get.count_over_100ms", sum(x > 100 for x in lat), "gets")
            rss, _ = rss_mb(pid)
            figure("daemon.rss_after_gets", rss, "MiB", target="< 300", ok=rss < 300)

            variants: list[tuple[str, dict[str, object]]] = [
                ("job.list[state=ready]", {"state": "ready"}),
                ("job.list[state=completed]", {"state": "completed"}),
                ("job.list[state=ready,running]", {"state": ["ready", "running"]}),
                ("job.list[cluster=local,state=ready]", {"state": "ready", "cluster": "local"}),
                ("job.list[campaign,state=ready]", {"state": "ready", "campaign": "bench-1m"}),
            ]
            for label, base in variants:
                pages: list[float] = []
                before = None
                for _ in range(10):
                    params = dict(base, limit=100)
                    if before is not None:
                        params["before"] = before
                    ms, res = await timed(client, "job.list", params)
                    pages.append(ms)
                    before = res["next"]  # type: ignore[index]
                    if before is None:
                        break
                figure(f"{label}.p50/page", percentile(pages, 50), "ms")
                figure(f"{label}.max/page", max(pages), "ms")
            info_ms = [(await timed(client, "daemon.info", {}))[0] for _ in range(5)]
            figure("daemon.info(count by state).p50", percentile(info_ms, 50), "ms")
            rss, hwm = rss_mb(pid)
            figure("daemon.rss_end", rss, "MiB", target="< 300", ok=rss < 300)
            figure("daemon.rss_peak(VmHWM)", hwm, "MiB")
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument(
        "--db",
        type=Path,
        default=Path("/tmp/schedulerd-bench-1m"),
        help="seeded state directory (cached between runs)",
    )
    parser.add_argument("--mode", choices=sorted(CONFIGS), default="owned")
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--pyspy", metavar="OUT", help="record the daemon with py-spy into OUT")
    args = parser.parse_args()
    state_dir: Path = args.db.resolve()
    ensure_seeded(state_dir, args.jobs, args.reseed)
    db = state_dir / "schedulerd.sqlite3"
    note(f"database {db}: {db.stat().st_size / 2**20:,.0f} MiB; mode {args.mode}")

    tmp = Path(tempfile.mkdtemp(prefix="sd-bench-1m-"))
    config = tmp / "schedulerd.toml"
    config.write_text(CONFIGS[args.mode])
    log_path = tmp / "daemon.log"
    try:
        with spawn_daemon(state_dir, tmp / "sd.sock", config, log_path) as run:
            ready_log = run.log_event_after("daemon_ready")
            figure("restart.to_socket_connect", run.socket_after, "s")
            figure(
                "restart.to_daemon_ready_log(READY=1)",
                ready_log,
                "s",
                target="< 5",
                ok=ready_log < 5,
            )
            figure(
                "restart.to_ping_answered", run.ping_after, "s", target="< 5", ok=run.ping_after < 5
            )
            figure("daemon.rss_at_ready", rss_mb(run.proc.pid)[0], "MiB")
            anyio.run(measure, tmp / "sd.sock", run.proc.pid, args.gets, args.pyspy)
    finally:
        # local jobs run detached (their own session) and live under the state dir
        reaped = reap_jobs(str(state_dir / "jobs"))
        if reaped:
            note(f"killed {reaped} leftover job session(s)")
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
