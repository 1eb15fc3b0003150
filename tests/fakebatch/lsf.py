"""Fake IBM Spectrum LSF commands: bsub, bjobs, bhist, bkill, bstop, bresume, lsid.

Outputs follow the real formats in ``tests/fixtures/batch-outputs/lsf``:

* ``bsub < script`` reads ``#BSUB`` lines (``-J -q -n -M -R -W -P -o -e -oo -eo -r -rn
  -H -cwd``) from the script on stdin, spools the script and prints "Job <n> is
  submitted to [default ]queue <q>.". Faults: ``submit_transient`` ("The destination
  queue has reached its job limit. Job not submitted."), ``submit_permanent`` ("<q>: No
  such queue. Job not submitted."; also for a queue not in config ``queues`` when set),
  ``submit_auth`` (eauth refused our credential: "Failed in an LSF library call: External
  authentication failed. Job not submitted.") and ``max_queued`` (the user's
  MAX_PEND_JOBS: "User <u>: Pending job threshold reached. Job not submitted.", as bsub
  prints it once its LSB_NTRIES retries are spent).
* ``bjobs [-u USER|all] [-a] [-w] [-json] [-noheader] [-o "FIELDS [delimiter='c']"]
  [IDS]``: ``-json -o`` documents as LSF 10.1 prints them (``"KEY":"value"``, ``\\/``
  escaped), delimited rows, or the ``-w`` table. Finished jobs show with ``-a`` (or by
  id) until they are *purged* -- a *forgotten* job is past what the daemon's queue view
  needs but LSF still keeps it for CLEAN_PERIOD. Unknown ids: "Job <n> is not found".
* ``bhist -l [-n N] [IDS]``: long records wrapped at 79 columns with 21-column
  continuation lines, "Done successfully" / "Exited with exit code N" / "Completed
  <exit>; TERM_...". Nothing found: "No matching job found".
* ``bkill``/``bstop``/``bresume``: "Job <n> is being terminated/stopped/resumed", or
  "Job <n>: Job has already finished" / "Job <n>: No matching job found" on stderr
  (exit 255). ``bstop`` makes a pending job PSUSP and stops a running one (USUSP).
* ``lsid``: an IBM Spectrum LSF 10.1 banner, or openlava's when config ``lsf_version``
  is ``"openlava"`` (its ``bjobs`` then has no ``-o``/``-json``).

``down`` makes every command fail as when mbatchd is unreachable ("LSF is down. Please
wait ..."); ``noise`` prints the banner lines a busy mbatchd puts before the output.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakebatch.core import FakeHead, Job, held_against_limit, mark_seen_done

Result = tuple[str, str, int]

DOWN = "LSF is down. Please wait ...\nbatch system daemon not responding ... still trying\n"
BUSY = "LSF is processing your request. Please wait ...\n"
SLOW = "Cannot connect to LSF. Please wait ...\n"
PEND_NEW = "New job is waiting for scheduling;"
PEND_USER = "The job was suspended by the user while pending;"
PEND_ADMIN = "The job was suspended by LSF admin or root while pending;"
EXIT_REASONS = {
    "cancelled": "TERM_OWNER: job killed by owner",
    "timeout": "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
    "node_fail": "TERM_UNKNOWN: LSF cannot determine a termination reason",
}


# --- helpers ---------------------------------------------------------------------------------


def _down(head: FakeHead, command: str) -> Result | None:
    if not head.faults.get("down"):
        return None
    if command == "lsid":
        return "", "ls_getclustername(): LIM is down; try later\n", 255
    return "", DOWN, 255


def _noise(head: FakeHead, banner: str = BUSY) -> str:
    return banner * 2 if head.faults.get("noise") else ""


def _openlava(head: FakeHead) -> bool:
    return str(head.config.get("lsf_version", "")).lower() == "openlava"


def _lsf_time(epoch: float | None, *, seconds: bool = False, weekday: bool = False) -> str:
    if epoch is None:
        return ""
    fmt = ("%a " if weekday else "") + ("%b %e %H:%M:%S" if seconds else "%b %e %H:%M")
    return time.strftime(fmt, time.localtime(epoch))


def _stat(job: Job) -> str:
    state = job["state"]
    if state == "queued":
        return "PEND"
    if state == "running":
        return "RUN"
    if state == "held":
        return str(job["extra"].get("susp") or "PSUSP")
    if job["exit_code"] == 0 and job["end_reason"] == "exited":
        return "DONE"
    return "EXIT"


def _field(job: Job, name: str, head: FakeHead) -> str:
    stat = _stat(job)
    if name in ("jobid", "id"):
        return str(job["seq"])
    if name == "jobindex":
        return "0"
    if name in ("job_name", "name"):
        return str(job["name"])
    if name == "stat":
        return stat
    if name == "user":
        return str(job["owner"])
    if name == "queue":
        return str(job["queue"])
    if name == "exit_code":
        if stat == "EXIT" and job["exit_code"] is not None:
            return str(job["exit_code"])
        return ""
    if name == "exit_reason":
        return EXIT_REASONS.get(job["end_reason"] or "", "") if stat == "EXIT" else ""
    if name == "pend_reason":
        if stat == "PEND":
            return PEND_NEW
        if stat == "PSUSP":
            return PEND_ADMIN if job["hold_reason"] == "system" else PEND_USER
        return ""
    if name == "submit_time":
        return _lsf_time(job["submit_time"])
    if name == "start_time":
        return _lsf_time(job["start_time"])
    if name == "finish_time":
        return _lsf_time(job["end_time"]) + " L" if job["end_time"] else ""
    if name == "from_host":
        return str(head.config["server"])
    if name == "exec_host":
        return str(head.config["server"]) if job["start_time"] else ""
    if name in ("output_file", "outfile"):
        return str(job["stdout"] or "")
    if name in ("error_file", "errfile"):
        return str(job["stderr"] or "")
    if name == "sub_cwd":
        return str(job["workdir"])
    raise KeyError(name)


def _json_string(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "/":
            out.append("\\/")  # LSF escapes slashes
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _json_document(records: list[list[tuple[str, str]]]) -> str:
    lines = ["{", '  "COMMAND":"bjobs",', f'  "JOBS":{len(records)},', '  "RECORDS":[']
    for n, record in enumerate(records):
        lines.append("    {")
        for m, (key, value) in enumerate(record):
            comma = "," if m < len(record) - 1 else ""
            lines.append(f'      "{key.upper()}":{_json_string(value)}{comma}')
        lines.append("    }," if n < len(records) - 1 else "    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _parse_format(fmt: str) -> tuple[list[str], str | None]:
    delimiter = None
    fields = []
    for word in fmt.split():
        if word.startswith("delimiter="):
            delimiter = word.split("=", 1)[1].strip("'\"")
        else:
            fields.append(word.split(":", 1)[0].lower())
    return fields, delimiter


def _options(argv: list[str], with_value: set[str]) -> tuple[dict[str, str | bool], list[str]]:
    opts: dict[str, str | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in with_value and i + 1 < len(argv):
            opts[arg] = argv[i + 1]
            i += 2
            continue
        if arg.startswith("-") and len(arg) > 1:
            opts[arg] = True
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def _visible(job: Job) -> bool:
    return not job["purged"]


def _event(job: Job, text: str) -> None:
    job["extra"].setdefault("events", []).append([time.time(), text])


# --- bsub ------------------------------------------------------------------------------------


def _parse_walltime(text: str) -> int:
    parts = text.split(":")
    minutes = int(parts[-1]) + (int(parts[0]) * 60 if len(parts) == 2 else 0)
    return minutes * 60


def _directives(script: str) -> list[str]:
    words: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("#BSUB"):
            words += shlex.split(stripped[len("#BSUB") :], comments=True)
        elif stripped and not stripped.startswith("#"):
            break  # LSF stops at the first command line
    return words


def bsub(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "bsub")
    if down:
        return down
    noise = _noise(head)
    script_arg = None
    if argv and not argv[-1].startswith("-") and (len(argv) == 1 or argv[-2] not in _BSUB_VALUED):
        script_arg = argv[-1]
        argv = argv[:-1]
    script = Path(script_arg).read_text() if script_arg else sys.stdin.read()
    if not script.strip():
        return noise, "Empty job. Job not submitted.\n", 255
    words = _directives(script) if script_arg is None else []
    settings: dict[str, Any] = {}
    for source in (words, argv):  # command-line options win
        i = 0
        while i < len(source):
            opt = source[i]
            if opt in _BSUB_VALUED and i + 1 < len(source):
                settings[opt] = source[i + 1]
                i += 2
                continue
            if opt in ("-r", "-rn", "-H"):
                settings[opt] = True
                settings.pop("-rn" if opt == "-r" else "-r" if opt == "-rn" else "", None)
            else:
                return (
                    noise,
                    f"bsub: illegal option -- {opt.lstrip('-')}\nJob not submitted.\n",
                    255,
                )
            i += 1
    queue_given = "-q" in settings
    queue = settings.get("-q") or "normal"
    cwd = os.getcwd()
    workdir = settings.get("-cwd") or cwd
    spool = head.home / "spool"
    spool.mkdir(exist_ok=True)
    with head.transaction() as q:
        if head.take_fault("submit_transient"):
            return (
                noise,
                "The destination queue has reached its job limit. Job not submitted.\n",
                255,
            )
        if head.take_fault("submit_auth"):
            return (
                noise,
                "Failed in an LSF library call: External authentication failed. Job not submitted.\n",
                255,
            )
        limit = int(head.faults.get("max_queued") or 0)
        owner = head.config["user"]
        if limit and held_against_limit(q, owner) >= limit:
            return (
                noise,
                f"User <{owner}>: Pending job threshold reached. Job not submitted.\n",
                255,
            )
        known = head.config.get("queues")
        if head.take_fault("submit_permanent") or (known and queue not in known):
            return noise, f"{queue}: No such queue. Job not submitted.\n", 255
        seq = int(q["next"])
        path = spool / f"{seq}.sh"
        path.write_text(script)

        def out_path(key: str) -> str | None:
            raw = settings.get(key) or settings.get(key + "o")
            if not raw:
                return None
            raw = raw.replace("%J", str(seq)).replace("%I", "0")
            return raw if os.path.isabs(raw) else os.path.join(workdir, raw)

        memory = settings.get("-M")
        job = head.add_job(
            q,
            "{seq}",
            name=settings.get("-J") or script.strip().replace("\n", ";")[:4000],
            queue=queue,
            script=str(path),
            workdir=workdir,
            stdout=out_path("-o"),
            stderr=out_path("-e"),
            walltime=_parse_walltime(settings["-W"]) if "-W" in settings else None,
            cpus=int(settings["-n"]) if "-n" in settings else None,
            memory_mb=int(memory) if memory else None,
            extra={
                "env": {"LSB_JOBID": str(seq), "LSB_JOBNAME": settings.get("-J") or ""},
                "project": settings.get("-P") or "default",
                "resources": settings.get("-R") or "",
                "rerunnable": bool(settings.get("-r")),
                "events": [
                    [
                        time.time(),
                        f"Submitted from host <{head.config['server']}>, to Queue <{queue}>, "
                        + f"CWD <{workdir}>;",
                    ]
                ],
            },
        )
        if settings.get("-H") and job["state"] == "queued":
            job.update(state="held", hold_reason="user")
            job["extra"]["susp"] = "PSUSP"
        where = "queue" if queue_given else "default queue"
        return noise + f"Job <{job['id']}> is submitted to {where} <{queue}>.\n", "", 0


_BSUB_VALUED = {"-J", "-q", "-n", "-M", "-R", "-W", "-P", "-o", "-e", "-oo", "-eo", "-cwd"}


# --- bjobs -----------------------------------------------------------------------------------


def bjobs(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "bjobs")
    if down:
        return down
    opts, ids = _options(argv, {"-u", "-o", "-q", "-J"})
    if _openlava(head) and ("-o" in opts or "-json" in opts):
        return "", "bjobs: illegal option -- o\nUsage: bjobs [-h] [-V] [-w |-l] [-a] ...\n", 255
    fmt = opts.get("-o")
    fields, delimiter = _parse_format(fmt) if isinstance(fmt, str) else ([], None)
    user = opts.get("-u") or head.config["user"]
    stderr = ""
    status = 0
    with head.transaction() as q:
        mark_seen_done(q)
        jobs: list[Job] = []
        if ids:
            for native_id in ids:
                job = q["jobs"].get(native_id)
                if job is None or not _visible(job):
                    stderr += f"Job <{native_id}> is not found\n"
                    status = 255
                else:
                    jobs.append(job)
        else:
            for job in sorted(q["jobs"].values(), key=lambda j: j["seq"]):
                if user != "all" and job["owner"] != user:
                    continue
                if job["state"] == "done" and ("-a" not in opts or not _visible(job)):
                    continue
                jobs.append(job)
            if not jobs:
                stderr = "No job found\n" if "-a" in opts else "No unfinished job found\n"
                status = 255
        try:
            if "-json" in opts:
                if not fields:
                    return "", "bjobs: -json requires -o\n", 255
                if not jobs:
                    return _noise(head, SLOW), stderr, status
                records = [[(f, _field(j, f, head)) for f in fields] for j in jobs]
                return (
                    _noise(head, SLOW)
                    + "\n" * bool(head.faults.get("noise"))
                    + _json_document(records),
                    stderr,
                    status,
                )
            if fields:
                sep = delimiter or " "
                lines = [] if "-noheader" in opts else [sep.join(f.upper() for f in fields)]
                for job in jobs:
                    lines.append(sep.join(_field(job, f, head) or "-" for f in fields))
                body = "\n".join(lines) + "\n" if jobs else ""
                return _noise(head) + body, stderr, status
        except KeyError as exc:
            return "", f"{exc.args[0]}: Illegal field name. Job not found.\n", 255
        header = "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"
        lines = [header] if jobs else []
        for job in jobs:
            lines.append(
                f"{job['seq']:<7} {job['owner']:<7} {_stat(job):<5} {job['queue']:<10} "
                f"{head.config['server']:<11} {_field(job, 'exec_host', head):<11} "
                f"{job['name']} {_lsf_time(job['submit_time'])}"
            )
        return _noise(head) + "".join(line + "\n" for line in lines), stderr, status


# --- bhist -----------------------------------------------------------------------------------


def _wrap(text: str) -> list[str]:
    lines = [text[:79]]
    rest = text[79:]
    while rest:
        lines.append(" " * 21 + rest[:58])
        rest = rest[58:]
    return lines


def _bhist_record(job: Job, head: FakeHead) -> list[str]:
    out = _wrap(
        f"Job <{job['id']}>, Job Name <{job['name']}>, User <{job['owner']}>, "
        f"Project <{job['extra'].get('project', 'default')}>, Command <{job['script']}>"
    )
    events: list[tuple[float, str]] = [
        (float(t), str(m)) for t, m in job["extra"].get("events", [])
    ]
    if job["start_time"]:
        events.append(
            (
                job["start_time"],
                f"Dispatched to <{head.config['server']}>, Effective "
                + "RES_REQ <select[type == local] order[r15s:pg] >;",
            )
        )
        events.append((job["start_time"], f"Starting (Pid {job['pid'] or 0});"))
    if job["state"] == "done":
        end = job["end_time"] or time.time()
        if _stat(job) == "DONE":
            events.append((end, "Done successfully. The CPU time used is 0.0 seconds;"))
        else:
            if job["exit_code"] is not None:
                events.append(
                    (
                        end,
                        f"Exited with exit code {job['exit_code']}. The CPU time "
                        + "used is 0.0 seconds;",
                    )
                )
            else:
                events.append((end, "Exited; The CPU time used is 0.0 seconds;"))
            term = EXIT_REASONS.get(job["end_reason"] or "")
            events.append((end, f"Completed <exit>; {term}." if term else "Completed <exit>."))
    events.sort(key=lambda e: e[0])
    for when, message in events:
        out += _wrap(f"{_lsf_time(when, seconds=True, weekday=True)}: {message}")
    out += [
        "",
        "Summary of time in seconds spent in various states by  "
        + _lsf_time(time.time(), seconds=True, weekday=True),
        "  PEND     PSUSP    RUN      USUSP    SSUSP    UNKWN    TOTAL",
        "  0        0        0        0        0        0        0",
    ]
    return out


def bhist(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "bhist")
    if down:
        return down
    opts, ids = _options(argv, {"-n", "-u", "-S", "-C"})
    with head.transaction() as q:
        mark_seen_done(q)
        jobs: list[Job] = []
        if ids:
            jobs = [j for i in ids if (j := q["jobs"].get(i)) is not None and _visible(j)]
        else:
            user = opts.get("-u") or head.config["user"]
            jobs = [j for j in q["jobs"].values() if _visible(j) and user in ("all", j["owner"])]
        if not jobs:
            return _noise(head), "No matching job found\n", 255
        blocks = ["\n".join(_bhist_record(job, head)) for job in jobs]
        separator = "\n" + "-" * 78 + "\n\n"
        return _noise(head) + separator.join(blocks) + "\n", "", 0


# --- bkill / bstop / bresume -----------------------------------------------------------------


def _signal_group(job: Job, sig: int) -> None:
    if job.get("pid"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job["pid"], sig)


def _each(
    head: FakeHead, argv: list[str], command: str, act: Callable[[Job], str | None]
) -> Result:
    down = _down(head, command)
    if down:
        return down
    _, ids = _options(argv, {"-s"})
    if not ids:
        return "", f"{command}: Usage: {command} [-h] [-V] [jobId ...]\n", 255
    stdout = stderr = ""
    with head.transaction() as q:
        for native_id in ids:
            job = q["jobs"].get(native_id)
            if job is None or job["purged"] or job["owner"] != head.config["user"]:
                if job is not None and not job["purged"]:
                    stderr += f"Job <{native_id}>: User permission denied\n"
                else:
                    stderr += f"Job <{native_id}>: No matching job found\n"
                continue
            if job["state"] == "done":
                stderr += f"Job <{native_id}>: Job has already finished\n"
                continue
            error = act(job)
            if error:
                stderr += f"Job <{native_id}>: {error}\n"
                continue
            if command == "bkill":
                head.cancel(q, native_id)
            stdout += f"Job <{native_id}> is being {_VERBS[command]}\n"
    return _noise(head) + stdout, stderr, 255 if stderr else 0


_VERBS = {"bkill": "terminated", "bstop": "stopped", "bresume": "resumed"}


def bkill(head: FakeHead, argv: list[str]) -> Result:
    def act(job: Job) -> str | None:
        if job["state"] == "held" and job["extra"].get("susp") == "USUSP":
            _signal_group(job, signal.SIGCONT)
            job["state"] = "running"
        _event(job, f"Signal <KILL> requested by user or administrator <{job['owner']}>;")
        return None

    return _each(head, argv, "bkill", act)


def bstop(head: FakeHead, argv: list[str]) -> Result:
    def act(job: Job) -> str | None:
        if job["state"] == "held":
            return None
        if job["state"] == "running":
            _signal_group(job, signal.SIGSTOP)
            job["extra"]["susp"] = "USUSP"
        else:
            job["extra"]["susp"] = "PSUSP"
        job.update(state="held", hold_reason="user")
        _event(job, f"Suspended by the user or administrator <{job['owner']}>;")
        return None

    return _each(head, argv, "bstop", act)


def bresume(head: FakeHead, argv: list[str]) -> Result:
    def act(job: Job) -> str | None:
        if job["state"] != "held":
            return "Job is not suspended"
        if job["extra"].get("susp") == "USUSP":
            _signal_group(job, signal.SIGCONT)
            job["state"] = "running"
        else:
            job["state"] = "queued"
        job["hold_reason"] = None
        job["extra"]["susp"] = None
        _event(job, f"Resumed by the user or administrator <{job['owner']}>;")
        return None

    return _each(head, argv, "bresume", act)


# --- lsid ------------------------------------------------------------------------------------


def lsid(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "lsid")
    if down:
        return down
    server = head.config["server"]
    if _openlava(head):
        banner = "openlava project 2.2, Nov  6 2014\n"
    else:
        banner = (
            "IBM Spectrum LSF Standard 10.1.0.13, Apr 15 2022\n"
            "Copyright International Business Machines Corp. 1992, 2016.\n"
            "US Government Users Restricted Rights - Use, duplication or disclosure "
            "restricted by GSA ADP Schedule Contract with IBM Corp.\n"
        )
    return banner + f"\nMy cluster name is fakecluster\nMy master name is {server}\n", "", 0


COMMANDS: dict[str, Callable[[FakeHead, list[str]], Result]] = {
    "bsub": bsub,
    "bjobs": bjobs,
    "bhist": bhist,
    "bkill": bkill,
    "bstop": bstop,
    "bresume": bresume,
    "lsid": lsid,
}
