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

Instant mode has a fast submit path, because one Python start-up per submit (30-50 ms)
would cap any driver at a few dozen jobs/s. ``FakeHead.create`` then writes the submit
shim of the head's flavor (``qsub FILE``, ``bsub`` < script, ``condor_submit -terse FILE``,
``sbatch --parsable FILE`` -- exactly the forms the drivers use) as a POSIX ``sh`` script
that uses shell builtins only:

1. it takes a job number by creating ``instant/ids/<n>`` with ``set -C`` (``O_EXCL``: two
   submitters can never get the same number), starting from the hint in ``instant/next``;
2. it appends ONE line ``<n> TAB <cwd> TAB <args...>`` to ``instant/spool`` (``bsub``
   first copies its stdin to ``instant/stdin.<n>``);
3. it prints what the real command prints for that id.

Any other argv, a non-empty ``faults.json``, or a tab/newline in an argument or the
working directory makes the shim run the Python command instead. At the start of every
transaction (any command, or ``jobs()`` in a test) the Python side ingests the complete
spool lines it has not seen (``queue["instant_offset"]``) by running the system's own
submit handler on each, with that job number and working directory: the job is
recorded exactly as a normal submit would record it, finished with exit 0. Python-side
submits in instant mode take their number the same way (``_claim_seq``). The mode and
the server name are read when the shims are written: change them with ``create``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import os
import shlex
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
    "qstat_limited": False,  # torque: a qstat without -x/--version (see pbs.py)
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
#   submit_auth: int        the next N submits are refused for our credentials, in the
#                           system's real wording (munge, AUTHENTICATE:1003, ...)
#   max_queued: int         a site limit: a submit is refused, in the system's real wording
#                           of its queued-jobs limit, while this many of the user's jobs are
#                           unfinished on the head (0 or absent: no limit)
#   submit_lost_reply: int  the next N submits queue the job but answer with the system's
#                           timeout (Slurm: "Socket timed out on send/recv operation")
FAULT_KEYS = {
    "submit_lost_reply",
    "submit_auth",
    "max_queued",
    "submit_transient",
    "submit_permanent",
    "hang",
    "down",
    "forget_finished",
    "hold_next",
    "node_fail_next",
    "noise",
}


def gated(gate: Path, then: str = "") -> tuple[str, ...]:
    """A job command that stays running until the test creates `gate`, then runs `then`.

    Round-trip tests that must observe a job RUNNING use this instead of a short sleep: on a
    loaded machine a `sleep 0.5` can start and finish between two status commands.
    """
    wait = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"
    return ("sh", "-c", f"{wait}; {then}" if then else wait)


class FakeHead:
    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)
        self._open_queue: dict[str, Any] | None = None  # inside transaction(): its queue
        self._forced_seq: int | None = None  # instant-mode ingest: the shim's job number
        self._ingest_config: dict[str, Any] | None = None  # config cached while ingesting
        self._last_added: list[Job] = []  # jobs add_job made during one ingested submit

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
        fast = INSTANT_SUBMIT.get(conf["flavor"]) if conf["mode"] == "instant" else None
        if fast is not None:
            instant = head.home / "instant"
            (instant / "ids").mkdir(parents=True, exist_ok=True)
            (instant / "spool").touch()
            if not (instant / "next").exists():
                (instant / "next").write_text(f"{head.load()['next']}\n")
        for command in ALL_COMMANDS:
            shim = bindir / command
            python = f'exec {sys.executable} {entry} --home {head.home} {command} "$@"\n'
            if fast is not None and command == fast[0]:
                shim.write_text(_instant_shim(head.home, conf, python))
            else:
                shim.write_text(f"#!/bin/sh\n{python}")
            shim.chmod(0o755)
        return head

    @property
    def config(self) -> dict[str, Any]:
        if self._ingest_config is not None:
            return dict(self._ingest_config)
        return dict(json.loads((self.home / "config.json").read_text()))

    def set_config(self, **values: Any) -> None:
        conf = self.config
        conf.update(values)
        (self.home / "config.json").write_text(json.dumps(conf))

    @property
    def faults(self) -> dict[str, Any]:
        if self._ingest_config is not None:
            return {}  # the shim accepted the job: no fault may refuse it now
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
        if self._ingest_config is not None:
            return False
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
        """Lock, load, ingest instant-mode submits, advance the clock (tick), yield the
        queue, save. Re-entered (a submit handler run by the ingest), it yields the
        queue already open."""
        if self._open_queue is not None:
            yield self._open_queue
            return
        with self.locked():
            queue = self.load()
            self._open_queue = queue
            try:
                self._ingest(queue)
                self.tick(queue)
                yield queue
            finally:
                self._open_queue = None
            self.save(queue)

    # --- instant mode: the fast submit path (see the module docstring) ------------------

    def _ingest(self, queue: dict[str, Any]) -> None:
        """Record the jobs the instant-mode shims accepted since the last transaction."""
        spool = self.home / "instant" / "spool"
        offset = int(queue.get("instant_offset", 0))
        try:
            with open(spool, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        conf = self.config
        handler = _submit_handler(conf["flavor"])
        cwd = os.getcwd()
        stdin = sys.stdin
        self._ingest_config = conf
        try:
            for line in data[:end].decode().split("\n")[:-1]:
                seq_text, workdir, *argv = line.split("\t")
                seq = int(seq_text)
                self._forced_seq = seq
                queue["next"] = max(int(queue["next"]), seq)
                os.chdir(workdir)
                if conf["flavor"] == "lsf":
                    path = self.home / "instant" / f"stdin.{seq}"
                    sys.stdin = io.StringIO(path.read_text())
                    path.unlink()
                _, err, status = handler(self, argv)
                if status != 0 or str(seq) not in {str(j["seq"]) for j in self._last_added}:
                    # the shim already said yes: keep the job, as one that failed at once
                    self.add_job(queue, INSTANT_SUBMIT[conf["flavor"]][1], name=f"rejected{seq}",
                                 script=argv[-1] if argv else "", workdir=workdir)  # fmt: skip
                    queue["jobs"][self._last_added[-1]["id"]].update(
                        exit_code=1, extra={"ingest": err}
                    )
                self._last_added.clear()
        finally:
            self._forced_seq = None
            self._ingest_config = None
            self._last_added.clear()
            sys.stdin = stdin
            os.chdir(cwd)
        queue["instant_offset"] = offset + end

    def _claim_seq(self, start: int) -> int:
        """A job number no instant-mode shim or other submit holds (O_EXCL create)."""
        ids = self.home / "instant" / "ids"
        seq = max(1, start)
        with contextlib.suppress(OSError, ValueError):
            seq = max(seq, int((self.home / "instant" / "next").read_text().strip() or 0))
        while True:
            try:
                os.close(os.open(ids / str(seq), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                seq += 1
        (self.home / "instant" / "next").write_text(f"{seq + 1}\n")
        return seq

    def jobs(self) -> list[Job]:
        with self.transaction() as queue:
            return [dict(j) for j in queue["jobs"].values()]

    def job(self, native_id: str) -> Job:
        with self.transaction() as queue:
            return dict(queue["jobs"][native_id])

    def add_job(self, state: dict[str, Any], job_id_format: str, **fields: Any) -> Job:
        """Queue a new job; ``job_id_format`` gets ``seq`` and ``server`` (e.g. "{seq}.{server}")."""
        conf = self.config
        if self._forced_seq is not None:
            seq, self._forced_seq = self._forced_seq, None
        elif conf["mode"] == "instant" and (self.home / "instant" / "ids").is_dir():
            seq = self._claim_seq(int(state["next"]))
        else:
            seq = int(state["next"])
        state["next"] = max(int(state["next"]), seq + 1)
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
        self._last_added.append(job)
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
                    late = self._runner_result(job)  # it may have finished since we looked
                    if late is not None:
                        job.update(late)
                    elif (self.home / f"cancelled.{job['seq']}").exists():
                        # cancelled before its runner could catch the signal
                        job.update(
                            state="done", exit_code=143, end_reason="cancelled", end_time=now
                        )
                    else:
                        # runner vanished without a word: the node died
                        job.update(
                            state="done", exit_code=None, end_reason="node_fail", end_time=now
                        )
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
        proc = subprocess.Popen(
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
        if job["pid"] != os.getpid():
            # The command that started us was killed (its SSH connection dropped) before
            # it recorded us, so the job is still queued and the next command starts it
            # again: that runner owns it. A real batch server never loses this record.
            return
        env = dict(os.environ)
        env.update(job["extra"].get("env", {}))
        stdout_path = job["stdout"] or os.path.join(job["workdir"], f"{job['name']}.o{job['seq']}")
        stderr_path = job["stderr"] or os.path.join(job["workdir"], f"{job['name']}.e{job['seq']}")
        os.makedirs(job["workdir"], exist_ok=True)
        with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
            child = subprocess.Popen(
                ["/bin/sh", job["script"]],
                cwd=job["workdir"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        if (self.home / f"cancelled.{job['seq']}").exists():
            # the cancel's signal reached us before the child existed (cancel() writes the
            # marker before it signals, so checking after the spawn closes the window)
            child.send_signal(signal.SIGTERM)
        end_reason = "exited"
        if node_fail:
            time.sleep(0.2)
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the node died: kills us too
        rc, end_reason = self._wait_child(child, job, end_reason)
        if rc < 0:
            rc = 128 - rc
        cancelled = (self.home / f"cancelled.{job['seq']}").exists()
        if cancelled:
            end_reason = "cancelled"
        result = {
            "state": "done",
            "exit_code": rc,
            "end_reason": end_reason,
            "end_time": time.time(),
        }
        tmp = self._result_path(job).with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, self._result_path(job))

    def _wait_child(
        self, child: subprocess.Popen[bytes], job: Job, end_reason: str
    ) -> tuple[int, str]:
        """Wait for the job's script under its walltime. A cancel's marker seen while it
        runs sends the TERM again to our group: a real server's kill is not lost in a
        spawn race (CI saw a cancelled `sleep 30` run to its end, exit 0)."""
        marker = self.home / f"cancelled.{job['seq']}"
        deadline = None if job["walltime"] is None else time.monotonic() + float(job["walltime"])
        forwarded = False
        while True:
            left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                return child.wait(timeout=left), end_reason
            except subprocess.TimeoutExpired:
                pass
            if not forwarded and marker.exists():
                forwarded = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(os.getpgid(0), signal.SIGTERM)  # we ignore it; the job does not
            if deadline is not None and time.monotonic() >= deadline:
                child.send_signal(signal.SIGTERM)
                try:
                    return child.wait(timeout=5), "timeout"
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait(), "timeout"

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


def held_against_limit(queue: dict[str, Any], owner: str) -> int:
    """The user's jobs that count against the ``max_queued`` fault: unfinished ones, and
    finished ones no status command has shown finished yet. (A real server takes seconds
    to dispatch a job; here a ``true`` job ends before the next submit, and the limit would
    never be met. Counting a job until a poll could have seen it end keeps the test's limit
    reachable without timing.) Status commands call :func:`mark_seen_done`."""
    return sum(
        1
        for j in queue["jobs"].values()
        if j["owner"] == owner and not (j["state"] == "done" and j["extra"].get("seen_done"))
    )


def mark_seen_done(queue: dict[str, Any]) -> None:
    """A status command ran: the jobs it could show finished stop counting against limits."""
    for job in queue["jobs"].values():
        if job["state"] == "done":
            job["extra"]["seen_done"] = True


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


#: flavor -> (submit command with an instant-mode shim, native id format for add_job)
INSTANT_SUBMIT: dict[str, tuple[str, str]] = {
    "pbspro": ("qsub", "{seq}.{server}"),
    "torque": ("qsub", "{seq}.{server}"),
    "lsf": ("bsub", "{seq}"),
    "htcondor": ("condor_submit", "{seq}.0"),
    "slurm": ("sbatch", "{seq}"),
}

_MODULES = {"pbspro": "pbs", "torque": "pbs", "lsf": "lsf", "htcondor": "condor", "slurm": "slurm"}


def _submit_handler(flavor: str) -> Any:
    """The per-system Python submit command."""
    module = importlib.import_module(f"tests.fakebatch.{_MODULES[flavor]}")
    return module.COMMANDS[INSTANT_SUBMIT[flavor][0]]


def _instant_shim(home: Path, conf: dict[str, Any], python: str) -> str:
    """The instant-mode submit shim: shell builtins only (each external command costs a
    fork and an exec, as much as the whole shim)."""
    flavor = conf["flavor"]
    h = str(home)
    if "'" in h:
        raise ValueError("a fake head's home must not contain a single quote")
    # $# and argv that take the fast path; anything else runs the Python command
    accept = {
        "pbspro": '[ "$#" -eq 1 ] && case "$1" in -*) false;; esac',
        "torque": '[ "$#" -eq 1 ] && case "$1" in -*) false;; esac',
        "lsf": '[ "$#" -eq 0 ]',
        "htcondor": '[ "$#" -eq 2 ] && [ "$1" = -terse ]',
        "slurm": '[ "$#" -eq 2 ] && [ "$1" = --parsable ]',
    }[flavor]
    server = conf["server"]
    output = {
        "pbspro": f"printf '%s.%s\\n' \"$__n\" '{server}'",
        "torque": f"printf '%s.%s\\n' \"$__n\" '{server}'",
        "lsf": "printf 'Job <%s> is submitted to default queue <normal>.\\n' \"$__n\"",
        "htcondor": 'printf \'%s.0 - %s.0\\n\' "$__n" "$__n"',
        "slurm": "printf '%s\\n' \"$__n\"",
    }[flavor]
    stdin = ""
    if flavor == "lsf":
        stdin = (
            'while IFS= read -r __l || [ -n "$__l" ]; do printf \'%s\\n\' "$__l"; done'
            ' >| "$__h/instant/stdin.$__n"\n'
        )
    return f"""#!/bin/sh
# fake {flavor} submit, instant mode: fast path in shell builtins (see tests/fakebatch/core.py)
__h='{h}'
__tab='\t'
__nl='
'
__fast=1
{accept} || __fast=
if [ -n "$__fast" ]; then
    IFS= read -r __f < "$__h/faults.json" || :
    [ "$__f" = "{{}}" ] || __fast=
fi
if [ -n "$__fast" ]; then
    case "$PWD $*" in *"$__tab"* | *"$__nl"*) __fast= ;; esac
fi
if [ -z "$__fast" ]; then
{python}fi
__n=
IFS= read -r __n < "$__h/instant/next" || :
case "$__n" in '' | *[!0-9]*) __n=1 ;; esac
set -C
until {{ : > "$__h/instant/ids/$__n"; }} 2>/dev/null; do __n=$((__n + 1)); done
set +C
echo $((__n + 1)) >| "$__h/instant/next"
{stdin}__line="$__n$__tab$PWD"
for __a; do __line="$__line$__tab$__a"; done
printf '%s\\n' "$__line" >> "$__h/instant/spool"
{output}
"""


ALL_COMMANDS = (
    "qsub", "qselect", "qstat", "qdel", "qhold", "qrls", "tracejob",
    "bsub", "bjobs", "bkill", "bhist", "bstop", "bresume", "lsid",
    "condor_submit", "condor_q", "condor_history", "condor_rm", "condor_hold",
    "condor_release", "condor_version",
    "sbatch", "squeue", "sacct", "scancel", "scontrol",
)  # fmt: skip
