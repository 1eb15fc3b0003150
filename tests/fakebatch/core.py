"""The fake batch system's core: a queue kept in a JSON file, real job processes, faults.

One *head* is a directory (its ``home``) holding ``config.json`` (flavor, mode, slots,
user, server name), ``queue.json`` (the jobs, under an ``flock``), ``faults.json``
(faults the tests switch on) and ``calls.log`` (one line per command run, so tests can
count polling cost). Commands (``qsub``, ``bjobs``, ...) are implemented per system in
``pbs.py``, ``lsf.py``, ``condor.py``, ``slurm.py``; each is a function
``(head, argv) -> (stdout, stderr, exit_status)``.

Job records are plain dicts with these keys:

    id        native id string (as the system prints it, e.g. "12.fakehead" for PBS)
    seq       integer sequence number
    name      job name
    owner     user name
    queue     queue / partition name
    script    path of the submitted script (or submit file)
    workdir   directory the job runs in
    stdout, stderr   paths (may be None: the system default applies)
    walltime  seconds or None
    cpus, memory_mb  ints or None
    state     "queued" | "held" | "running" | "done"
    exit_code int or None (set when done)
    end_reason  None | "exited" | "cancelled" | "timeout" | "node_fail"
    hold_reason str or None ("user", "system: ...")
    submit_time, start_time, end_time   epoch floats or None
    pid       pid of the runner process (its process group id), or None
    forgotten True once the job left the queue (not shown by queue commands)
    purged    True once history/accounting forgot it as well
    extra     dict for system-specific values

Modes: ``real`` runs each job's script with ``sh`` in its own session, at most ``slots``
at once; ``instant`` marks each job done with exit 0 the moment it is submitted, without
running it (for benchmarks).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Job = dict[str, Any]

DEFAULT_CONFIG: dict[str, Any] = {
    "flavor": "pbspro",  # pbspro | torque | lsf | htcondor | slurm
    "mode": "real",  # real | instant
    "slots": 1000,
    "user": os.environ.get("USER", "alice"),
    "server": "fakehead",
    "keep_finished_in_queue": 0.0,  # seconds a done job stays visible in the queue command
}

# Faults a test may switch on by writing faults.json (see FakeHead.set_faults):
#   submit_transient: int   the next N submits fail with the system's transient error
#   submit_permanent: int   the next N submits fail with a permanent error (bad queue)
#   hang: {command: seconds}  that command sleeps before answering
#   down: bool              every command fails as if the server could not be reached
#   forget_finished: bool   finished jobs vanish from queue AND history at once
#   hold_next: int          the next N submitted jobs are held by the system
#   node_fail_next: int     the next N started jobs die with their node (no exit file)
#   noise: bool             commands print banner/noise lines the parsers must skip
FAULT_KEYS = {
    "submit_transient",
    "submit_permanent",
    "hang",
    "down",
    "forget_finished",
    "hold_next",
    "node_fail_next",
    "noise",
}


class FakeHead:
    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)

    # --- set-up (used by tests) ---------------------------------------------------------

    @classmethod
    def create(
        cls, home: str | os.PathLike[str], bin_dir: str | os.PathLike[str], **config: Any
    ) -> FakeHead:
        """Make a head directory and a bin directory of command shims pointing at it."""
        head = cls(home)
        head.home.mkdir(parents=True, exist_ok=True)
        conf = {**DEFAULT_CONFIG, **config}
        (head.home / "config.json").write_text(json.dumps(conf))
        if not (head.home / "queue.json").exists():
            (head.home / "queue.json").write_text(json.dumps({"next": 1, "jobs": {}}))
        (head.home / "faults.json").write_text("{}")
        bindir = Path(bin_dir)
        bindir.mkdir(parents=True, exist_ok=True)
        entry = Path(__file__).with_name("fakebatch.py")
        for command in ALL_COMMANDS:
            shim = bindir / command
            shim.write_text(
                f"#!/bin/sh\nexec {sys.executable} {entry} --home {head.home} {command} \"$@\"\n"
            )
            shim.chmod(0o755)
        return head

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "config.json").read_text()))

    def set_config(self, **values: Any) -> None:
        conf = self.config
        conf.update(values)
        (self.home / "config.json").write_text(json.dumps(conf))

    @property
    def faults(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.home / "faults.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def set_faults(self, **faults: Any) -> None:
        unknown = set(faults) - FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        with self.locked():
            current = self.faults
            current.update(faults)
            (self.home / "faults.json").write_text(json.dumps(current))

    def take_fault(self, key: str) -> bool:
        """Consume one count of a counted fault (caller holds the lock)."""
        current = self.faults
        count = int(current.get(key) or 0)
        if count <= 0:
            return False
        current[key] = count - 1
        (self.home / "faults.json").write_text(json.dumps(current))
        return True

    def calls(self) -> list[list[str]]:
        """Every command run so far, as argv lists."""
        path = self.home / "calls.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def clear_calls(self) -> None:
        (self.home / "calls.log").unlink(missing_ok=True)

    # --- the queue ----------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.home / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "queue.json").read_text()))

    def save(self, queue: dict[str, Any]) -> None:
        tmp = self.home / "queue.json.tmp"
        tmp.write_text(json.dumps(queue))
        os.replace(tmp, self.home / "queue.json")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, advance the clock (tick), yield the queue, save."""
        with self.locked():
            queue = self.load()
            self.tick(queue)
            yield queue
            self.save(queue)

    def jobs(self) -> list[Job]:
        with self.transaction() as queue:
            return [dict(j) for j in queue["jobs"].values()]

    def job(self, native_id: str) -> Job:
        with self.transaction() as queue:
            return dict(queue["jobs"][native_id])

    def add_job(self, state: dict[str, Any], job_id_format: str, **fields: Any) -> Job:
        """Queue a new job; ``job_id_format`` gets ``seq`` and ``server`` (e.g. "{seq}.{server}")."""
        conf = self.config
        seq = int(state["next"])
        state["next"] = seq + 1
        now = time.time()
        job: Job = {
            "id": job_id_format.format(seq=seq, server=conf["server"]),
            "seq": seq,
            "name": fields.pop("name", f"job{seq}"),
            "owner": conf["user"],
            "queue": fields.pop("queue", None) or "batch",
            "script": fields.pop("script"),
            "workdir": fields.pop("workdir", None) or os.getcwd(),
            "stdout": fields.pop("stdout", None),
            "stderr": fields.pop("stderr", None),
            "walltime": fields.pop("walltime", None),
            "cpus": fields.pop("cpus", None),
            "memory_mb": fields.pop("memory_mb", None),
            "state": "queued",
            "exit_code": None,
            "end_reason": None,
            "hold_reason": None,
            "submit_time": now,
            "start_time": None,
            "end_time": None,
            "pid": None,
            "forgotten": False,
            "purged": False,
            "extra": fields.pop("extra", {}),
        }
        if fields:
            raise TypeError(f"unknown job fields {sorted(fields)}")
        if self.take_fault("hold_next"):
            job["state"] = "held"
            job["hold_reason"] = "system"
        if conf["mode"] == "instant" and job["state"] == "queued":
            job.update(state="done", exit_code=0, end_reason="exited", start_time=now, end_time=now)
        state["jobs"][job["id"]] = job
        return job

    def tick(self, queue: dict[str, Any]) -> None:
        """Advance every job: reap finished runners, forget old jobs, start queued ones."""
        conf = self.config
        faults = self.faults
        now = time.time()
        running = 0
        for job in queue["jobs"].values():
            if job["state"] == "running":
                result = self._runner_result(job)
                if result is not None:
                    job.update(result)
                elif job["pid"] is not None and not _alive(job["pid"]):
                    # runner vanished without a word: the node died
                    job.update(state="done", exit_code=None, end_reason="node_fail", end_time=now)
                else:
                    running += 1
            if job["state"] == "done" and not job["forgotten"]:
                if faults.get("forget_finished"):
                    job["forgotten"] = job["purged"] = True
                elif now - (job["end_time"] or now) >= float(conf["keep_finished_in_queue"]):
                    job["forgotten"] = True
        if conf["mode"] != "real":
            return
        for job in sorted(queue["jobs"].values(), key=lambda j: j["seq"]):
            if running >= int(conf["slots"]):
                break
            if job["state"] == "queued":
                self._start(job)
                running += 1

    # --- running jobs -------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        node_fail = self.take_fault("node_fail_next")
        entry = Path(__file__).with_name("fakebatch.py")
        proc = subprocess.Popen(  # noqa: S603 - test helper
            [sys.executable, str(entry), "--home", str(self.home), "__run", job["id"]]
            + (["--node-fail"] if node_fail else []),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        # The runner outlives this command; make sure Python does not warn about it.
        proc.returncode = 0
        job.update(state="running", start_time=time.time(), pid=proc.pid)

    def _result_path(self, job: Job) -> Path:
        return self.home / f"result.{job['seq']}.json"

    def _runner_result(self, job: Job) -> dict[str, Any] | None:
        path = self._result_path(job)
        if not path.exists():
            return None
        result = dict(json.loads(path.read_text()))
        path.unlink()
        return result

    def run_job(self, native_id: str, node_fail: bool = False) -> None:
        """Body of the runner process: run the script, record how it ended."""
        # A cancel signals our whole process group: survive it to record the outcome.
        signal.signal(signal.SIGTERM, lambda *_: None)
        job = self.job(native_id)
        env = dict(os.environ)
        env.update(job["extra"].get("env", {}))
        stdout_path = job["stdout"] or os.path.join(job["workdir"], f"{job['name']}.o{job['seq']}")
        stderr_path = job["stderr"] or os.path.join(job["workdir"], f"{job['name']}.e{job['seq']}")
        os.makedirs(job["workdir"], exist_ok=True)
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            child = subprocess.Popen(  # noqa: S603 - test helper
                ["/bin/sh", job["script"]],
                cwd=job["workdir"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        end_reason = "exited"
        if node_fail:
            time.sleep(0.2)
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the node died: kills us too
        try:
            rc = child.wait(timeout=job["walltime"])
        except subprocess.TimeoutExpired:
            end_reason = "timeout"
            child.send_signal(signal.SIGTERM)
            try:
                rc = child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                rc = child.wait()
        if rc < 0:
            rc = 128 - rc
        cancelled = (self.home / f"cancelled.{job['seq']}").exists()
        if cancelled:
            end_reason = "cancelled"
        result = {"state": "done", "exit_code": rc, "end_reason": end_reason, "end_time": time.time()}
        tmp = self._result_path(job).with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, self._result_path(job))

    def cancel(self, queue: dict[str, Any], native_id: str) -> bool:
        """Cancel a job; False when it is unknown or already finished."""
        job = queue["jobs"].get(native_id)
        if job is None or job["state"] == "done" or job["forgotten"]:
            return False
        if job["state"] == "running" and job["pid"]:
            (self.home / f"cancelled.{job['seq']}").touch()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job["pid"], signal.SIGTERM)
            return True
        job.update(state="done", exit_code=None, end_reason="cancelled", end_time=time.time())
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


ALL_COMMANDS = (
    "qsub", "qselect", "qstat", "qdel", "qhold", "qrls", "tracejob",
    "bsub", "bjobs", "bkill", "bhist", "bstop", "bresume", "lsid",
    "condor_submit", "condor_q", "condor_history", "condor_rm", "condor_hold",
    "condor_release", "condor_version",
    "sbatch", "squeue", "sacct", "scancel", "scontrol",
)  # fmt: skip
