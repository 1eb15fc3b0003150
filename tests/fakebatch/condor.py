"""Fake HTCondor commands: condor_submit, condor_q, condor_history, condor_rm, condor_hold,
condor_release, condor_version.

Outputs follow the real formats (see tests/fixtures/batch-outputs/htcondor):
``condor_submit -terse`` prints ``C.0 - C.0``, ``-af[:jt...]`` prints the job id and the
attribute values (``undefined`` when missing), ``condor_rm`` "Job C.P marked for
removal". Native ids are ``{seq}.0``. Faults ``submit_auth`` (AUTHENTICATE:1003/1004 under
"Failed to connect to local queue manager") and ``max_queued`` (MAX_JOBS_PER_OWNER) use
condor_submit's own wordings. ``condor_history`` reads the (fake) local history
file, so it keeps working when the schedd is down, as the real one does.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from typing import Any

from tests.fakebatch.core import FakeHead, Job

Result = tuple[str, str, int]

ADDRESS = "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=fakehead&noUDP&sock=schedd_4242_9f3c>"
CONNECT_FAILED = f"CEDAR:6001:Failed to connect to {ADDRESS}\n"
QUEUE_MANAGER = "ERROR: Failed to connect to local queue manager\n" + CONNECT_FAILED
FETCH_FAILED = f"-- Failed to fetch ads from: {ADDRESS} : fakehead\n" + CONNECT_FAILED
# refused credentials, as condor_submit prints them (submit.cpp connect_to_the_schedd: the
# error stack of a token the schedd does not accept; DIRACGrid/DIRAC issue #8048)
AUTH_REFUSED = (
    "\nERROR: Failed to connect to local queue manager\n"
    "AUTHENTICATE:1003:Failed to authenticate with any method\n"
    "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS\n"
)
# the schedd's per-owner limit on jobs in the queue (qmgmt.cpp NewProc; submit.cpp)
OWNER_LIMIT = (
    "\nERROR: Failed to create proc\nNumber of submitted jobs would exceed MAX_JOBS_PER_OWNER\n"
)
NOISE = "*** fakehead: the schedd will be restarted on Saturday 08:00 ***\n"
VERSION = (
    "$CondorVersion: 10.0.0 Nov 15 2022 BuildID: 613286 PackageID: 10.0.0-1 $\n"
    "$CondorPlatform: x86_64_AlmaLinux8 $\n"
)
SYSTEM_HOLD = (
    "The system macro SYSTEM_PERIODIC_HOLD expression '(NumJobStarts > 10)' evaluated to TRUE"
)


def _noise(head: FakeHead) -> str:
    return NOISE if head.faults.get("noise") else ""


# --- submit descriptions ---------------------------------------------------------------------


def _parse_description(text: str) -> tuple[dict[str, str], dict[str, str], int]:
    """(submit commands by lower-case name, +custom attributes, queue count)."""
    commands: dict[str, str] = {}
    custom: dict[str, str] = {}
    count = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(?i)^queue(?:\s+(\d+))?\s*$", line)
        if m:
            count += int(m.group(1) or 1)
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"Illegal submit command: {line}")
        key, value = key.strip(), value.strip()
        if key.startswith("+") or key.upper().startswith("MY."):
            custom[key.lstrip("+").split(".", 1)[-1]] = value
        else:
            commands[key.lower()] = value
    return commands, custom, count


def _mem_mb(text: str) -> int:
    m = re.match(r"^(\d+)\s*([KMGT]?)B?$", text.strip().upper())
    if not m:
        raise ValueError(text)
    n, unit = int(m.group(1)), m.group(2) or "M"
    return {"K": n // 1024, "M": n, "G": n * 1024, "T": n * 1024 * 1024}[unit]


def _expand(value: str, cluster: int) -> str:
    for macro, repl in (
        ("Cluster", cluster),
        ("ClusterId", cluster),
        ("Process", 0),
        ("ProcId", 0),
    ):
        value = re.sub(rf"\$\({macro}\)", str(repl), value, flags=re.IGNORECASE)
    return value


def condor_submit(head: FakeHead, argv: list[str]) -> Result:
    terse = "-terse" in argv
    dry_run: str | None = None
    files: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "-dry-run":
            dry_run = argv[i + 1] if i + 1 < len(argv) else "-"
            i += 1
        elif not argv[i].startswith("-"):
            files.append(argv[i])
        i += 1
    if not files:
        return "", "ERROR: no submit description file given\n", 1
    path = os.path.abspath(files[0])
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return "", f"ERROR: Failed to open command file ({files[0]})\n", 1
    noise = _noise(head)
    head_out = "" if terse else "Submitting job(s).\n"
    try:
        commands, custom, count = _parse_description(text)
        cpus = int(commands["request_cpus"]) if "request_cpus" in commands else None
        memory = _mem_mb(commands["request_memory"]) if "request_memory" in commands else None
        walltime = int(custom["MaxRuntime"]) if "MaxRuntime" in custom else None
    except (ValueError, KeyError) as exc:
        return noise + head_out, f"\nERROR: {exc}\n", 1
    if count != 1:
        return noise + head_out, "ERROR: the fake queues exactly one job per submit file\n", 1
    if "executable" not in commands:
        return noise + head_out, "ERROR: No 'executable' parameter was provided\n", 1
    with head.transaction() as queue:
        if head.faults.get("down"):
            return noise, QUEUE_MANAGER, 1
        cluster = int(queue["next"])
        initialdir = os.path.abspath(_expand(commands.get("initialdir", "."), cluster))
        executable = os.path.join(os.getcwd(), _expand(commands["executable"], cluster))

        def in_iwd(key: str) -> str | None:
            value = commands.get(key)
            return os.path.join(initialdir, _expand(value, cluster)) if value else None

        if dry_run is not None:
            ad = f'ClusterId = 1\nProcId = 0\nCmd = "{executable}"\nIwd = "{initialdir}"\n'
            if dry_run == "-":
                return noise + ad, "", 0
            with open(dry_run, "w") as fh:
                fh.write(ad)
            return noise, "", 0
        if head.take_fault("submit_auth"):
            return noise, AUTH_REFUSED, 1
        if head.take_fault("submit_transient"):
            return noise, QUEUE_MANAGER, 1
        limit = int(head.faults.get("max_queued") or 0)
        if limit > 0:
            user = head.config["user"]
            unfinished = sum(
                1
                for j in queue["jobs"].values()
                if j["owner"] == user and j["state"] != "done" and not j["forgotten"]
            )
            if unfinished >= limit:
                return noise, OWNER_LIMIT, 1
        if head.take_fault("submit_permanent"):
            rejected = (
                "ERROR: Failed to commit job submission into the queue.\n"
                "ERROR: This pool does not accept vanilla universe jobs without a project.\n"
            )
            return noise + head_out, rejected, 1
        batch_name = commands.get("batch_name")
        job = head.add_job(
            queue,
            "{seq}.0",
            name=batch_name or os.path.basename(executable),
            script=executable,
            workdir=initialdir,
            stdout=in_iwd("output") or os.devnull,
            stderr=in_iwd("error") or os.devnull,
            walltime=walltime,
            cpus=cpus,
            memory_mb=memory,
            extra={
                "batch_name": batch_name,
                "accounting_group": commands.get("accounting_group"),
                "custom": custom,
            },
        )
    if terse:
        return f"{noise}{job['id']} - {job['id']}\n", "", 0
    return f"{noise}{head_out}1 job(s) submitted to cluster {job['seq']}.\n", "", 0


# --- job ads ---------------------------------------------------------------------------------


def _status(job: Job) -> int:
    if job["state"] == "queued":
        return 1
    if job["state"] == "running":
        return 2
    if job["state"] == "held":
        return 5
    if job["end_reason"] in ("cancelled", "timeout"):
        return 3
    return 4


def _ad(job: Job, user: str) -> dict[str, Any]:
    """The job's ClassAd attributes (None: undefined)."""
    status = _status(job)
    done = job["state"] == "done"
    ad: dict[str, Any] = {
        "ClusterId": job["seq"],
        "ProcId": 0,
        "Owner": user,
        "JobStatus": status,
        "JobBatchName": job["extra"].get("batch_name"),
        "Iwd": job["workdir"],
        "Cmd": job["script"],
        "Out": job["stdout"],
        "Err": job["stderr"],
        "QDate": int(job["submit_time"]),
        "RequestCpus": job["cpus"] or 1,
        "RequestMemory": job["memory_mb"],
        "MaxRuntime": job["walltime"],
        "NumJobStarts": 1 if job["start_time"] else 0,
        "JobStartDate": int(job["start_time"]) if job["start_time"] else None,
        "JobCurrentStartDate": int(job["start_time"]) if job["start_time"] else None,
        "EnteredCurrentStatus": int(
            (job["end_time"] if done else job["start_time"] if status == 2 else None)
            or job["submit_time"]
        ),
        "CompletionDate": int(job["end_time"]) if done and job["end_time"] else 0,
        "AccountingGroup": job["extra"].get("accounting_group"),
    }
    if status == 5:
        if job["hold_reason"] == "user":
            ad.update(HoldReason=f"via condor_hold (by user {user})", HoldReasonCode=1)
        else:
            ad.update(HoldReason=SYSTEM_HOLD, HoldReasonCode=26)
        ad["HoldReasonSubCode"] = 0
    if status == 3:
        if job["end_reason"] == "timeout":
            ad["RemoveReason"] = (
                "The job attribute PeriodicRemove expression '(JobStatus == 2) && "
                f"((time() - JobCurrentStartDate) > {job['walltime']})' evaluated to TRUE"
            )
        else:
            ad["RemoveReason"] = f"via condor_rm (by user {user})"
    if status == 4:
        if job["end_reason"] == "node_fail":
            ad.update(ExitBySignal=True, ExitSignal=9)
        else:
            ad.update(ExitBySignal=False, ExitCode=job["exit_code"])
    return ad


def _format_value(value: Any, quote: bool) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"' if quote else value
    return str(value)


_TOKEN = re.compile(
    r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[<>!()+\-*/])'
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*))"
)


def _evaluate(expr: str, ad: dict[str, Any]) -> bool:
    """A small ClassAd expression evaluator (enough for constraints on ids and times)."""
    code = _compile(expr)
    values: dict[str, Any] = {k.lower(): v for k, v in ad.items()}
    try:
        return bool(
            eval(code, {"__builtins__": {}}, {"_v": values})
        )  # test fake: tokens are checked in _compile
    except (TypeError, ValueError, SyntaxError, ZeroDivisionError, NameError):
        # a comparison with undefined is not a match
        return False


@functools.lru_cache(maxsize=64)
def _compile(expr: str) -> Any:
    """The constraint as Python code over ``_v`` (the ad, lower-case keys), compiled once:
    a ``-constraint`` naming hundreds of jobs is evaluated against every ad."""
    out: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse constraint at {expr[pos:]!r}")
        pos = m.end()
        if m.group("num"):
            out.append(m.group("num"))
        elif m.group("str"):
            out.append(m.group("str"))
        elif m.group("op"):
            op = m.group("op")
            out.append(
                {"&&": " and ", "||": " or ", "!": " not ", "=?=": "==", "=!=": "!="}.get(op, op)
            )
        else:
            name = m.group("name")
            low = name.lower()
            if low in ("true", "false"):
                out.append(str(low == "true"))
            elif low == "undefined":
                out.append("None")
            elif low == "time" and expr[pos:].lstrip().startswith("("):
                out.append(str(int(time.time())))
                pos = expr.index(")", pos) + 1
            else:
                out.append(f"_v.get({low!r})")
    try:
        return compile("".join(out), "<constraint>", "eval")
    except SyntaxError:
        return compile("None", "<constraint>", "eval")


def _restrictions(words: list[str], ad: dict[str, Any]) -> bool:
    if not words:
        return True
    for word in words:
        if re.match(r"^\d+\.\d+$", word):
            if word == f"{ad['ClusterId']}.{ad['ProcId']}":
                return True
        elif word.isdigit():
            if int(word) == ad["ClusterId"]:
                return True
        elif word == ad["Owner"]:
            return True
    return False


def _parse_query(argv: list[str]) -> dict[str, Any]:
    query: dict[str, Any] = {
        "af": None,
        "opts": "",
        "constraint": None,
        "words": [],
        "match": None,
        "since": None,
    }
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith(("-af", "-autoformat")):
            query["opts"] = word.partition(":")[2]
            attrs = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                attrs.append(argv[i])
            query["af"] = attrs
        elif word == "-constraint":
            i += 1
            query["constraint"] = argv[i] if i < len(argv) else "true"
        elif word in ("-match", "-limit"):
            i += 1
            query["match"] = int(argv[i])
        elif word == "-completedsince":
            i += 1
            query["since"] = float(argv[i])
        elif not word.startswith("-"):
            query["words"].append(word)
        i += 1
    return query


def _render(ads: list[dict[str, Any]], query: dict[str, Any]) -> str:
    lines = []
    attrs: list[str] | None = query["af"]
    for ad in ads:
        if attrs is None:
            st = "IRXCHRS"[ad["JobStatus"] - 1]
            lines.append(f"{ad['ClusterId']}.0   {ad['Owner']}  {st}  {ad['Cmd']}")
            continue
        opts = query["opts"]
        sep = "\t" if "t" in opts else " "
        values = []
        for attr in attrs:
            key = next((k for k in ad if k.lower() == attr.lower()), None)
            values.append(_format_value(ad.get(key) if key else None, "V" in opts))
        if "j" in opts:
            values.insert(0, f"{ad['ClusterId']}.{ad['ProcId']}")
        lines.append(sep.join(values))
    return "".join(line + "\n" for line in lines)


def condor_q(head: FakeHead, argv: list[str]) -> Result:
    query = _parse_query(argv)
    noise = _noise(head)
    with head.transaction() as queue:
        if head.faults.get("down"):
            return noise, FETCH_FAILED, 1
        user = head.config["user"]
        jobs = [dict(j) for j in queue["jobs"].values() if not j["forgotten"]]
    ads = [_ad(j, user) for j in sorted(jobs, key=lambda j: j["seq"])]
    ads = [a for a in ads if _restrictions(query["words"], a)]
    if query["constraint"]:
        ads = [a for a in ads if _evaluate(query["constraint"], a)]
    return noise + _render(ads, query), "", 0


def condor_history(head: FakeHead, argv: list[str]) -> Result:
    query = _parse_query(argv)
    noise = _noise(head)
    with head.transaction() as queue:
        user = head.config["user"]
        jobs = [dict(j) for j in queue["jobs"].values() if j["forgotten"] and not j["purged"]]
    # most recent first, like the real history file read backwards
    jobs.sort(key=lambda j: j["end_time"] or 0, reverse=True)
    ads = []
    for job in jobs:
        ad = _ad(job, user)
        if query["since"] is not None and (ad["CompletionDate"] or 0) < query["since"]:
            break
        if not _restrictions(query["words"], ad):
            continue
        if query["constraint"] and not _evaluate(query["constraint"], ad):
            continue
        ads.append(ad)
        if query["match"] is not None and len(ads) >= query["match"]:
            break
    return noise + _render(ads, query), "", 0


# --- rm, hold, release -----------------------------------------------------------------------


def _targets(queue: dict[str, Any], words: list[str]) -> list[tuple[str, Job | None]]:
    found: list[tuple[str, Job | None]] = []
    for word in words:
        native_id = word if "." in word else f"{word}.0"
        job = queue["jobs"].get(native_id)
        found.append((native_id, None if job is None or job["forgotten"] else job))
    return found


def _act(head: FakeHead, argv: list[str], action: str) -> Result:
    words = [w for w in argv if not w.startswith("-")]
    out: list[str] = []
    err: list[str] = []
    with head.transaction() as queue:
        if head.faults.get("down"):
            return "", CONNECT_FAILED, 1
        for native_id, job in _targets(queue, words):
            if job is None or (action == "rm" and job["state"] == "done"):
                err.append(f"Job {native_id} not found")
            elif action == "rm":
                head.cancel(queue, native_id)
                out.append(f"Job {native_id} marked for removal")
            elif action == "hold":
                if job["state"] == "queued":
                    job.update(state="held", hold_reason="user")
                    out.append(f"Job {native_id} held")
                elif job["state"] == "held":
                    out.append(f"Job {native_id} held")
                else:
                    err.append(f"Job {native_id} not held: the fake cannot evict running jobs")
            elif job["state"] == "held":
                job.update(state="queued", hold_reason=None)
                out.append(f"Job {native_id} released")
            else:
                err.append(f"Job {native_id} not held to be released")
    return "".join(x + "\n" for x in out), "".join(x + "\n" for x in err), 1 if err else 0


def condor_rm(head: FakeHead, argv: list[str]) -> Result:
    return _act(head, argv, "rm")


def condor_hold(head: FakeHead, argv: list[str]) -> Result:
    return _act(head, argv, "hold")


def condor_release(head: FakeHead, argv: list[str]) -> Result:
    return _act(head, argv, "release")


def condor_version(head: FakeHead, argv: list[str]) -> Result:
    return VERSION, "", 0


COMMANDS: dict[str, Callable[[FakeHead, list[str]], Result]] = {
    "condor_submit": condor_submit,
    "condor_q": condor_q,
    "condor_history": condor_history,
    "condor_rm": condor_rm,
    "condor_hold": condor_hold,
    "condor_release": condor_release,
    "condor_version": condor_version,
}
