"""Fake Slurm commands: sbatch, squeue, sacct, scancel, scontrol (hold/release).

Outputs follow the real formats (see tests/fixtures/batch-outputs/slurm): ``sbatch
--parsable`` prints ``<id>``, plain ``sbatch`` "Submitted batch job <id>"; ``squeue -o``
and ``sacct --format`` print the requested fields, with ``SLURM_TIME_FORMAT`` honoured
(``standard`` or a ``strftime`` format such as ``%s``). ``sacct`` without ``-S`` shows
only jobs since midnight, as the real one does.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.fakebatch.core import FakeHead, Job, held_against_limit, mark_seen_done

Result = tuple[str, str, int]

VERSION = "slurm 23.02.1"
DOWN = "Unable to contact slurm controller (connect failure)"
NOISE = "*** fakehead: scheduled maintenance on Saturday 08:00-12:00 ***\n"
DBD_DOWN = (
    "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
    "connection to host:localhost:6819: Connection refused\n"
    "sacct: error: Sending PersistInit msg: Connection refused\n"
    "sacct: error: Problem talking to the database: Connection refused\n"
)
TRANSIENT = (
    "Socket timed out on send/recv operation",
    "Resource temporarily unavailable",
)
#: ``submit_auth``: munged is not running on the submit host (dun/munge#118: the munge
#: plugin's lines, then sbatch's final line with SLURM_PROTOCOL_AUTHENTICATION_ERROR)
AUTH_REFUSED = (
    'sbatch: error: Munge encode failed: Failed to access "/var/run/munge/munge.socket.2": '
    "No such file or directory\n"
    "sbatch: error: authentication: Socket communication error\n"
    "sbatch: error: Batch job submission failed: Protocol authentication error\n"
)
#: ``max_queued``: the QOS MaxSubmitJobsPerUser limit; the controller sends the reason
#: name (job_state_reason.c) before sbatch's ESLURM_ACCOUNTING_POLICY line
QUEUED_LIMIT = (
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)\n"
)


def _noise(head: FakeHead) -> str:
    return NOISE if head.faults.get("noise") else ""


# --- helpers ---------------------------------------------------------------------------------


def _fmt_time(value: float | None, missing: str = "Unknown") -> str:
    if not value:
        return missing
    fmt = os.environ.get("SLURM_TIME_FORMAT", "standard")
    if fmt in ("standard", "", "relative") or "%" not in fmt:
        fmt = "%Y-%m-%dT%H:%M:%S"
    return time.strftime(fmt, time.localtime(value))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "UNLIMITED"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


def _parse_duration(text: str) -> int:
    """sbatch --time: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.append(0)
        h, m, s = parts
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return ((days * 24 + h) * 60 + m) * 60 + s


def _parse_mem(text: str) -> int:
    m = re.match(r"^(\d+)([KMGT]?)B?$", text.upper())
    if not m:
        raise ValueError(text)
    n, unit = int(m.group(1)), m.group(2) or "M"
    return {"K": n // 1024, "M": n, "G": n * 1024, "T": n * 1024 * 1024}[unit]


def _expand(path: str, seq: int, name: str, user: str) -> str:
    if "\\" in path:
        return path.replace("\\", "")
    out, i = [], 0
    while i < len(path):
        ch = path[i]
        if ch == "%" and i + 1 < len(path):
            nxt = path[i + 1]
            out.append({"%": "%", "j": str(seq), "A": str(seq), "x": name, "u": user}.get(nxt, ""))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_LONG = {
    "J": "job-name",
    "o": "output",
    "e": "error",
    "p": "partition",
    "c": "cpus-per-task",
    "t": "time",
    "A": "account",
    "D": "chdir",
}
_VALUED = set(_LONG.values()) | {"mem"}


def _parse_options(words: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """sbatch options (``--opt=value``, ``--opt value``, ``-x value``) and the rest."""
    opts: dict[str, str | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            key, eq, value = word[2:].partition("=")
            if key in _VALUED and not eq:
                i += 1
                value = words[i] if i < len(words) else ""
                eq = "="
            opts[key] = value if eq else True
        elif word.startswith("-") and len(word) >= 2 and word[1] in _LONG:
            key = _LONG[word[1]]
            value = word[2:]
            if not value:
                i += 1
                value = words[i] if i < len(words) else ""
            opts[key] = value
        else:
            rest.append(word)
        i += 1
    return opts, rest


def _directives(script: str) -> list[str]:
    """Words of the ``#SBATCH`` lines before the first command."""
    words: list[str] = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            words += shlex.split(stripped[len("#SBATCH") :])
    return words


# --- sbatch ----------------------------------------------------------------------------------


def sbatch(head: FakeHead, argv: list[str]) -> Result:
    if "--version" in argv or "-V" in argv:
        return f"{VERSION}\n", "", 0
    cli, rest = _parse_options(argv)
    if not rest:
        return "", "sbatch: error: Batch script is empty!\n", 1
    script_path = os.path.abspath(rest[0])
    try:
        with open(script_path) as fh:
            text = fh.read()
    except OSError as exc:
        return "", f"sbatch: error: Unable to open file {rest[0]}: {exc.strerror}\n", 1
    if not text.startswith("#!"):
        return (
            "",
            (
                "sbatch: error: This does not look like a batch script.  The first\n"
                "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
            ),
            1,
        )
    opts, _ = _parse_options(_directives(text))
    opts.update(cli)
    noise = _noise(head)
    with head.transaction() as queue:
        faults = head.faults
        if faults.get("down"):
            return noise, f"sbatch: error: Batch job submission failed: {DOWN}\n", 1
        if head.take_fault("submit_transient"):
            which = TRANSIENT[int(queue["next"]) % len(TRANSIENT)]
            return noise, f"sbatch: error: Batch job submission failed: {which}\n", 1
        if head.take_fault("submit_auth"):
            return noise, AUTH_REFUSED, 1
        limit = int(faults.get("max_queued") or 0)
        if limit and held_against_limit(queue, head.config["user"]) >= limit:
            return noise, QUEUED_LIMIT, 1
        partition = str(opts.get("partition") or "batch")
        known = head.config.get("partitions")
        if head.take_fault("submit_permanent") or (known and partition not in known):
            return (
                noise,
                (
                    f"sbatch: error: invalid partition specified: {partition}\n"
                    "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
                ),
                1,
            )
        try:
            walltime = _parse_duration(str(opts["time"])) if "time" in opts else None
            memory = _parse_mem(str(opts["mem"])) if "mem" in opts else None
            cpus = int(str(opts["cpus-per-task"])) if "cpus-per-task" in opts else None
        except (ValueError, KeyError):
            return noise, "sbatch: error: Invalid numeric value\n", 1
        if "test-only" in opts:
            return (
                noise,
                (
                    f"sbatch: Job {queue['next']} to start at "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} using {cpus or 1} processors on "
                    f"nodes node001 in partition {partition}\n"
                ),
                0,
            )
        seq = int(queue["next"])
        name = str(opts.get("job-name") or os.path.basename(script_path))
        user = head.config["user"]
        workdir = os.path.abspath(str(opts.get("chdir") or os.getcwd()))
        out = str(opts.get("output") or "slurm-%j.out")
        err = str(opts.get("error") or out)
        job = head.add_job(
            queue,
            "{seq}",
            name=name,
            queue=partition,
            script=script_path,
            workdir=workdir,
            stdout=os.path.join(workdir, _expand(out, seq, name, user)),
            stderr=os.path.join(workdir, _expand(err, seq, name, user)),
            walltime=walltime,
            cpus=cpus,
            memory_mb=memory,
            extra={
                "account": opts.get("account") or None,
                "requeue": bool(opts.get("requeue")),
            },
        )
        lost_reply = head.take_fault("submit_lost_reply")
    if lost_reply:
        # the controller queued it, the answer never came back (ESLURM 5004)
        return (
            noise,
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
            1,
        )
    if "parsable" in opts:
        return f"{noise}{job['id']}\n", "", 0
    return f"{noise}Submitted batch job {job['id']}\n", "", 0


# --- squeue ----------------------------------------------------------------------------------


def _visible(job: Job) -> bool:
    return not job["forgotten"]


def _state(job: Job) -> str:
    if job["state"] in ("queued", "held"):
        return "PENDING"
    if job["state"] == "running":
        return "RUNNING"
    return "COMPLETING"


def _reason(job: Job) -> str:
    if job["state"] == "held":
        return "JobHeldUser" if job["hold_reason"] == "user" else "JobHeldAdmin"
    if job["state"] == "queued":
        return "Priority"
    return "None"


_COMPACT = {"PENDING": "PD", "RUNNING": "R", "COMPLETING": "CG"}
#: squeue's column titles (src/squeue/print.c, the header each _print_job_* prints)
_TITLES = {
    "i": "JOBID", "A": "JOBID", "T": "STATE", "t": "ST", "r": "REASON", "R": "NODELIST(REASON)",
    "B": "EXEC_HOST", "N": "NODELIST", "u": "USER", "D": "NODES", "C": "CPUS",
    "P": "PARTITION", "l": "TIME_LIMIT", "M": "TIME", "S": "START_TIME", "j": "NAME",
    "V": "SUBMIT_TIME", "Z": "WORK_DIR", "a": "ACCOUNT",
}  # fmt: skip


def _squeue_field(job: Job, code: str, user: str) -> str:
    now = time.time()
    state = _state(job)
    started = job["start_time"] if job["state"] != "queued" else None
    values: dict[str, Callable[[], str]] = {
        "i": lambda: job["id"],
        "A": lambda: job["id"],
        "T": lambda: state,
        "t": lambda: _COMPACT[state],
        "r": lambda: _reason(job),
        "R": lambda: f"({_reason(job)})" if state == "PENDING" else "node001",
        "B": lambda: "n/a" if state == "PENDING" else "node001",
        "N": lambda: "" if state == "PENDING" else "node001",
        "u": lambda: user,
        "D": lambda: "1",
        "C": lambda: str(job["cpus"] or 1),
        "P": lambda: job["queue"],
        "l": lambda: _duration(job["walltime"]),
        "M": lambda: _duration(now - started) if started else "0:00",
        "S": lambda: _fmt_time(started, "N/A"),
        "j": lambda: job["name"],
        "V": lambda: _fmt_time(job["submit_time"]),
        "Z": lambda: job["workdir"],
        "a": lambda: str(job["extra"].get("account") or "(null)"),
    }
    getter = values.get(code)
    return getter() if getter else ""


def _render_format(fmt: str, job: Job, user: str) -> str:
    def repl(m: re.Match[str]) -> str:
        right, width, code = m.group(1), m.group(2), m.group(3)
        value = _squeue_field(job, code, user)
        if width:
            w = int(width)
            value = value[:w]
            value = value.rjust(w) if right else value.ljust(w)
        return value

    return re.sub(r"%(\.?)(\d*)([A-Za-z%])", lambda m: "%" if m.group(3) == "%" else repl(m), fmt)


def squeue(head: FakeHead, argv: list[str]) -> Result:
    fmt = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
    header = True
    users: set[str] | None = None
    ids: list[str] | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if word in ("-h", "--noheader"):
            header = False
        elif word in ("-o", "--format"):
            fmt, i = nxt, i + 1
        elif word.startswith("--format="):
            fmt = word.split("=", 1)[1]
        elif word in ("-u", "--user"):
            users, i = set(nxt.split(",")), i + 1
        elif word.startswith("--user="):
            users = set(word.split("=", 1)[1].split(","))
        elif word in ("-j", "--jobs"):
            ids, i = nxt.split(","), i + 1
        elif word.startswith("--jobs="):
            ids = word.split("=", 1)[1].split(",")
        i += 1
    noise = _noise(head)
    with head.transaction() as queue:
        if head.faults.get("down"):
            return noise, f"slurm_load_jobs error: {DOWN}\n", 1
        user = head.config["user"]
        jobs = [j for j in queue["jobs"].values() if _visible(j)]
        mark_seen_done(queue)
    if users is not None and user not in users:
        jobs = []
    if ids is not None:
        jobs = [j for j in jobs if j["id"] in ids]
        if not jobs:
            return noise, "slurm_load_jobs error: Invalid job id specified\n", 1
    lines = [noise.rstrip("\n")] if noise else []
    if header:
        lines.append(
            re.sub(r"%\.?\d*([A-Za-z])", lambda m: _TITLES.get(m.group(1), m.group(1).upper()), fmt)
        )
    for job in sorted(jobs, key=lambda j: j["seq"]):
        lines.append(_render_format(fmt, job, user))
    return "".join(line + "\n" for line in lines), "", 0


# --- sacct -----------------------------------------------------------------------------------


def _sacct_state(job: Job) -> tuple[str, str, str, str]:
    """(allocation state, allocation ExitCode, batch state, batch ExitCode)."""
    uid = os.getuid()
    if job["state"] in ("queued", "held"):
        return "PENDING", "0:0", "", ""
    if job["state"] == "running":
        return "RUNNING", "0:0", "RUNNING", "0:0"
    reason, rc = job["end_reason"], job["exit_code"]
    if reason == "cancelled":
        if job["start_time"] is None:
            return f"CANCELLED by {uid}", "0:0", "", ""
        return f"CANCELLED by {uid}", "0:15", "CANCELLED", "0:15"
    if reason == "timeout":
        return "TIMEOUT", "0:1", "CANCELLED", "0:15"
    if reason == "node_fail":
        return "NODE_FAIL", "1:0", "", ""
    if rc == 0:
        return "COMPLETED", "0:0", "COMPLETED", "0:0"
    return "FAILED", f"{rc}:0", "FAILED", f"{rc}:0"


def _sacct_fields(
    job: Job, step: str | None, state: str, exit_code: str, user: str
) -> dict[str, str]:
    end = job["end_time"] if job["state"] == "done" else None
    start = job["start_time"]
    elapsed = (end or time.time()) - start if start else 0
    return {
        "jobid": job["id"] + (f".{step}" if step else ""),
        "jobidraw": job["id"] + (f".{step}" if step else ""),
        "jobname": step if step else job["name"],
        "state": state,
        "exitcode": exit_code,
        "submit": _fmt_time(job["submit_time"]),
        "start": _fmt_time(start) if start else ("Unknown" if job["state"] != "done" else "None"),
        "end": _fmt_time(end) if end else "Unknown",
        "elapsed": _duration(elapsed),
        "totalcpu": "00:00:00",
        "ncpus": str(job["cpus"] or 1),
        "maxrss": "" if not step else "1024K",
        "maxvmsize": "" if not step else "4096K",
        "user": "" if step else user,
        "partition": "" if step else job["queue"],
        "account": str(job["extra"].get("account") or ""),
    }


def _parse_sacct_time(text: str) -> float:
    if text.startswith("now"):
        m = re.match(r"^now(?:-(\d+))?$", text)
        return time.time() - (int(m.group(1)) if m and m.group(1) else 0)
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).timestamp()
        except ValueError:
            pass
    raise ValueError(text)


def sacct(head: FakeHead, argv: list[str]) -> Result:
    fields = ["jobid", "jobname", "partition", "account", "ncpus", "state", "exitcode"]
    header, delim, trailing = True, None, False
    ids: list[str] | None = None
    allocations_only = False
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight.timestamp()
    i = 0
    while i < len(argv):
        word = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        key, eq, inline = word.partition("=")
        if word in ("-n", "--noheader"):
            header = False
        elif word in ("-p", "--parsable"):
            delim, trailing = "|", True
        elif word in ("-P", "--parsable2"):
            delim, trailing = "|", False
        elif word in ("-X", "--allocations"):
            allocations_only = True
        elif key in ("-o", "--format"):
            value = inline if eq else nxt
            i += 0 if eq else 1
            fields = [f.strip().lower() for f in value.split(",") if f.strip()]
        elif key in ("-j", "--jobs"):
            value = inline if eq else nxt
            i += 0 if eq else 1
            ids = value.split(",")
        elif key in ("-S", "--starttime"):
            value = inline if eq else nxt
            i += 0 if eq else 1
            try:
                start = _parse_sacct_time(value)
            except ValueError:
                return "", f"sacct: error: Invalid time specification (pos=0): {value}\n", 1
        elif key in ("-u", "--user", "-s", "--state", "-E", "--endtime"):
            i += 0 if eq else 1
        i += 1
    noise = _noise(head)
    with head.transaction() as queue:
        if head.faults.get("down"):
            return noise, DBD_DOWN, 1
        user = head.config["user"]
        jobs = [dict(j) for j in queue["jobs"].values() if not j["purged"]]
        mark_seen_done(queue)
    # sacct's field names as its header prints them (src/sacct/sacct.c fields[])
    titles = {"jobid": "JobID", "jobidraw": "JobIDRaw", "jobname": "JobName", "state": "State",
              "exitcode": "ExitCode", "submit": "Submit", "start": "Start", "end": "End",
              "elapsed": "Elapsed", "totalcpu": "TotalCPU", "ncpus": "NCPUS", "maxrss": "MaxRSS",
              "maxvmsize": "MaxVMSize", "user": "User", "partition": "Partition",
              "account": "Account"}  # fmt: skip
    known = set(titles)
    for f in fields:
        if f not in known:
            return "", f'sacct: error: Invalid field requested: "{f}"\n', 1
    lines = [noise.rstrip("\n")] if noise else []
    sep = delim or " "
    if header:
        lines.append(sep.join(titles[f] for f in fields) + ("|" if trailing else ""))
    for job in sorted(jobs, key=lambda j: j["seq"]):
        if ids is not None and job["id"] not in ids:
            continue
        if (job["end_time"] or time.time()) < start:
            continue  # ended before the window opened
        state, code, bstate, bcode = _sacct_state(job)
        records = [_sacct_fields(job, None, state, code, user)]
        if bstate and not allocations_only:
            records.append(_sacct_fields(job, "batch", bstate, bcode, user))
        for rec in records:
            lines.append(sep.join(rec[f] for f in fields) + ("|" if trailing else ""))
    return "".join(line + "\n" for line in lines), "", 0


# --- scancel, scontrol -----------------------------------------------------------------------


def scancel(head: FakeHead, argv: list[str]) -> Result:
    ids = [a for a in argv if not a.startswith("-")]
    verbose = "-v" in argv
    err: list[str] = []
    status = 0
    with head.transaction() as queue:
        if head.faults.get("down"):
            return (
                "",
                "".join(f"scancel: error: Kill job error on job id {i}: {DOWN}\n" for i in ids),
                1,
            )
        for native_id in ids:
            job = queue["jobs"].get(native_id)
            if verbose:
                err.append(f"scancel: Terminating job {native_id}")
            if job is None or job["forgotten"]:
                err.append(f"scancel: error: Kill job error on job id {native_id}: "
                           "Invalid job id specified")  # fmt: skip
                status = 1
            elif not head.cancel(queue, native_id):
                err.append(f"scancel: error: Kill job error on job id {native_id}: "
                           "Job/step already completing or completed")  # fmt: skip
    return "", "".join(line + "\n" for line in err), status


def scontrol(head: FakeHead, argv: list[str]) -> Result:
    if not argv or argv[0] not in ("hold", "release", "uhold"):
        return "", f"scontrol: error: Invalid command: {' '.join(argv[:1])}\n", 1
    action = argv[0]
    ids = [i for word in argv[1:] for i in word.split(",") if i]
    err: list[str] = []
    with head.transaction() as queue:
        if head.faults.get("down"):
            return "", f"slurm_update error: {DOWN}\n", 1
        for native_id in ids:
            job: dict[str, Any] | None = queue["jobs"].get(native_id)
            if job is None or job["forgotten"]:
                err.append(f"Invalid job id specified for job {native_id}")
            elif action in ("hold", "uhold"):
                if job["state"] not in ("queued", "held"):
                    err.append(f"Job is no longer pending execution for job {native_id}")
                else:
                    job.update(state="held", hold_reason="user")
            elif job["state"] == "held":
                job.update(state="queued", hold_reason=None)
    return "", "".join(line + "\n" for line in err), 1 if err else 0


COMMANDS: dict[str, Callable[[FakeHead, list[str]], Result]] = {
    "sbatch": sbatch,
    "squeue": squeue,
    "sacct": sacct,
    "scancel": scancel,
    "scontrol": scontrol,
}
