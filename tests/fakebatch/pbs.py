"""Fake PBS Pro / OpenPBS and Torque commands: qsub, qstat, qdel, qhold, qrls.

``head.config["flavor"]`` picks the dialect: ``pbspro`` prints ``qstat -f -F json`` in
the PBS Pro 19/20 layout (4-space indent, ``"key":value``, all-digit values printed bare
-- which makes an all-digit environment value like ``005`` invalid JSON, as real PBS
does) and keeps finished jobs for ``qstat -x``; ``torque`` prints ``qstat -x`` as one
line of XML and shows finished jobs as ``C`` until the core forgets them.

Supported argv forms: ``qsub [-h] [-q Q] [-N NAME] [-o P] [-e P] [-l RES] [-r y|n]
[-A ACCT] [-v VARS] SCRIPT`` (plus the same options as ``#PBS`` lines in the script);
``qstat [-x] [-f] [-F json] [-w] [ID...]`` (pbspro), ``qstat [-x] [-f] [-t] [ID...]``
(torque; needs -x); ``qstat --version``; ``qdel|qhold|qrls ID...``.

``head.config["qstat_limited"]`` (torque only) plays a Torque-compatible head whose
``qstat`` is a thin front end, as Slurm's ``qstat`` wrapper is: no ``-x`` and no
``--version`` (refused as ``Unknown option``, usage on stderr, exit 2), only
``qstat -f [ID...]`` in the classic text layout (4-space attributes, long values
continued on TAB-indented lines), finished jobs shown as ``C`` without ``exit_status``,
and ids it does not know skipped silently (exit 153 when none was shown).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from typing import Any

from tests.fakebatch.core import FakeHead, Job

PBSPRO_VERSION = "19.1.3"
TORQUE_VERSION = "6.1.2"
EXIT_WALLTIME = {"pbspro": -29, "torque": -11}  # JOB_EXEC_KILL_WALLTIME / OVERLIMIT_WT
EXIT_NODE_FAIL = -1  # JOB_EXEC_FAIL1
#: ``max_queued``: a job still counts against the limit for this long after its script
#: ended. A real server counts it until it has processed the end (the MoM's obit: state E,
#: then history F or Torque's C), which takes a moment; the fake reaps at once, so without
#: this a ``true`` job would end between two qsubs of one round and the limit never bite.
EXITING_S = 3.0

Result = tuple[str, str, int]


# --- helpers ---------------------------------------------------------------------------------


def _flavor(head: FakeHead) -> str:
    return str(head.config["flavor"])


def _down(head: FakeHead, command: str) -> Result | None:
    if not head.faults.get("down"):
        return None
    server = head.config["server"]
    if _flavor(head) == "torque":
        err = (
            f"Unable to communicate with {server}(127.0.0.1)\n"
            f"Cannot connect to specified server host '{server}'.\n"
            f"{command}: cannot connect to server {server} (errno=111) Connection refused\n"
        )
        return "", err, 1
    out = ""
    if command == "qstat":
        out = _pbs_json({"timestamp": int(time.time()), "pbs_version": PBSPRO_VERSION,
                         "pbs_server": server})  # fmt: skip
    err = f"Connection refused\n{command}: cannot connect to server {server} (errno=15010)\n"
    return out, err, 255


def _noise(head: FakeHead) -> bool:
    return bool(head.faults.get("noise"))


def _ctime(epoch: float | None) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(epoch or time.time()))


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _walltime_seconds(text: str) -> int | None:
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        return None
    total = 0
    for value in values:
        total = total * 60 + value
    return total


def _expand_flags(argv: list[str], takes_value: set[str]) -> list[str]:
    """Split combined short flags (``-xf`` -> ``-x -f``; ``-fF`` keeps F's value next)."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            letters = arg[1:]
            for i, letter in enumerate(letters):
                out.append("-" + letter)
                if letter in takes_value and letters[i + 1 :]:
                    out.append(letters[i + 1 :])
                    break
        else:
            out.append(arg)
    return out


# --- qsub ----------------------------------------------------------------------------------


QSUB_VALUE_OPTS = {"N", "q", "o", "e", "l", "r", "A", "v", "S", "j", "W", "m", "M", "a", "J"}


def _parse_options(words: list[str], opts: dict[str, Any]) -> list[str]:
    """Apply qsub options to ``opts``; returns the positional words."""
    rest: list[str] = []
    words = _expand_flags(words, QSUB_VALUE_OPTS)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            rest.extend(words[i + 1 :])
            break
        if word == "-h":
            opts["hold"] = True
        elif word.startswith("-") and word[1:] in QSUB_VALUE_OPTS:
            if i + 1 >= len(words):
                raise ValueError(f"option requires an argument -- '{word[1:]}'")
            value = words[i + 1]
            i += 1
            key = word[1:]
            if key == "l":
                opts.setdefault("l", []).extend(v for v in value.split(",") if v)
            elif key == "v":
                for item in value.split(","):
                    name, _, val = item.partition("=")
                    opts.setdefault("env", {})[name] = val
            else:
                opts[key] = value
        elif word.startswith("-"):
            raise ValueError(f"invalid option -- '{word.lstrip('-')}'")
        else:
            rest.append(word)
        i += 1
    return rest


def _script_directives(text: str) -> list[str]:
    """``#PBS`` option words, read until the first command line (as qsub does)."""
    words: list[str] = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if index == 0 and stripped.startswith("#!"):
            continue
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if stripped.startswith("#PBS"):
            words.extend(shlex.split(stripped[4:], comments=False))
    return words


def _auth_refused(flavor: str, user: str, server: str) -> Result:
    """The server will not run jobs as our user: PBSE_BADUSER, exit status = code & 0xff
    (OpenPBS 15023 -> 175; Torque 15025 -> 177, wording as in marbl/canu#104)."""
    if flavor == "torque":
        text = (
            f"qsub: submit error (Bad UID for job execution MSG=ruserok failed validating "
            f"{user}/{user} from {server})\n"
        )
        return "", text, 177
    return "", "qsub: Bad UID for job execution\n", 175


def _limit_refused(flavor: str, user: str, server: str, qname: str, limit: int, seq: int) -> Result:
    """A limit on the user's unfinished jobs. OpenPBS: a queue's max_queued = [u:user=N]
    (msg_et_suq, PBSE_ENTLIMCT 15142 -> exit 38); Torque: the server's max_user_queuable
    (req_quejob.c, PBSE_MAXQUED 15048 -> exit 200, wording as in marbl/canu#672)."""
    if flavor == "torque":
        text = (
            f"qsub: submit error (Maximum number of jobs already in queue MSG=Job "
            f"{seq}.{server} violates the global server limit of {limit} jobs queued per "
            "user)\n"
        )
        return "", text, 200
    return "", f"qsub: Maximum number of jobs for user {user} already in queue {qname}\n", 38


def qsub(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "qsub")
    if down:
        return down
    flavor = _flavor(head)
    cli: dict[str, Any] = {}
    try:
        positional = _parse_options(argv, cli)
    except ValueError as exc:
        return "", f"qsub: {exc}\nusage: qsub [-a date_time] ... [script]\n", 2
    if len(positional) != 1:
        return "", "usage: qsub [-a date_time] ... [script | -- command [arg1 ...]]\n", 2
    script = positional[0]
    try:
        with open(script) as fh:
            text = fh.read()
    except OSError:
        return "", "qsub: script file:: No such file or directory\n", 2
    opts: dict[str, Any] = {}
    try:
        _parse_options(_script_directives(text), opts)
    except ValueError as exc:
        return "", f"qsub: directive error: {exc}\n", 2
    env = {**opts.get("env", {}), **cli.get("env", {})}
    opts.update(cli)
    opts["env"] = env
    cpus = memory_mb = walltime = None
    for res in opts.get("l", []):
        key, _, value = res.partition("=")
        if key == "walltime":
            walltime = _walltime_seconds(value)
        elif key in ("select", "nodes"):
            for part in value.split(":"):
                k, _, v = part.partition("=")
                if k in ("ncpus", "ppn") and v.isdigit():
                    cpus = int(v)
                elif k == "mem" and v.endswith("mb") and v[:-2].isdigit():
                    memory_mb = int(v[:-2])
        elif key == "mem" and value.endswith("mb") and value[:-2].isdigit():
            memory_mb = int(value[:-2])
    server = head.config["server"]
    user = head.config["user"]
    with head.transaction() as queue:
        qname = opts.get("q") or ("workq" if flavor == "pbspro" else "batch")
        if head.take_fault("submit_transient"):
            if flavor == "torque":
                return (
                    "",
                    (
                        "qsub: submit error (Maximum number of jobs already in queue for user "
                        "MSG=total number of current user's jobs exceeds the queue limit: "
                        f"user {user}@{server}, queue {qname})\n"
                    ),
                    1,
                )
            return (
                "",
                f"qsub: would exceed queue {qname}'s per-user limit of jobs in 'Q' state\n",
                1,
            )
        if head.take_fault("submit_permanent"):
            if flavor == "torque":
                return "", "qsub: submit error (Unknown queue MSG=requested queue not found)\n", 1
            return "", "qsub: Unknown queue\n", 1
        if head.take_fault("submit_auth"):
            return _auth_refused(flavor, user, server)
        limit = int(head.faults.get("max_queued") or 0)
        if limit > 0:
            now = time.time()
            unfinished = sum(
                1
                for j in queue["jobs"].values()
                if j["owner"] == user
                and (j["state"] != "done" or now - (j["end_time"] or 0) < EXITING_S)
            )
            if unfinished >= limit:
                return _limit_refused(flavor, user, server, qname, limit, queue.get("next", 1))
        job = head.add_job(
            queue,
            "{seq}.{server}",
            name=opts.get("N") or script.rsplit("/", 1)[-1],
            script=script,
            stdout=opts.get("o"),
            stderr=opts.get("e"),
            walltime=walltime,
            cpus=cpus,
            memory_mb=memory_mb,
            extra={
                "env": env,
                "rerunable": opts.get("r", "y") != "n",
                "account": opts.get("A"),
                "submit_args": shlex.join(argv),
            },
        )
        # add_job's own first parameter is called "queue", so the field is set here
        job["queue"] = qname
        if opts.get("hold") and job["state"] == "queued":
            job.update(state="held", hold_reason="user")
        native_id = job["id"]
    out = "Job submitted; have a nice day\n" if _noise(head) else ""
    return out + native_id + "\n", "", 0


# --- qstat: PBS Pro JSON --------------------------------------------------------------------

_BARE = re.compile(r"-?\d+(\.\d+)?")


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return json.dumps(str(value))
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    # PBS prints values that look numeric without quotes -- even "005" (openpbs#1255)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _pbs_json(obj: dict[str, Any], indent: int = 0) -> str:
    """PBS Pro 19/20 layout: 4-space indent, ``"key":value``, closing brace on its own line."""
    pad = " " * (indent + 4)
    items = []
    for key, value in obj.items():
        if isinstance(value, dict):
            items.append(f"{pad}{json.dumps(key)}:{_pbs_json(value, indent + 4).rstrip()}")
        else:
            items.append(f"{pad}{json.dumps(key)}:{_scalar(value)}")
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}\n"


def _pbs_state(job: Job, history: bool) -> tuple[str, int]:
    state = job["state"]
    if state == "queued":
        return "Q", 10
    if state == "held":
        return "H", 20
    if state == "running":
        return "R", 42
    if history:
        return "F", 91 if job["start_time"] is None else 92
    return "E", 50


def _exit_status(job: Job, flavor: str) -> int | None:
    if job["end_reason"] == "timeout":
        return EXIT_WALLTIME[flavor]
    if job["end_reason"] == "node_fail":
        return EXIT_NODE_FAIL
    if job["start_time"] is None:
        return None  # deleted before it ran
    return job["exit_code"] if job["exit_code"] is not None else EXIT_NODE_FAIL


def _pbs_job(job: Job, server: str, history: bool) -> dict[str, Any]:
    letter, substate = _pbs_state(job, history)
    ncpus = job["cpus"] or 1
    started, ended = job["start_time"], job["end_time"]
    workdir = job["workdir"]
    out_path = job["stdout"] or f"{workdir}/{job['name']}.o{job['seq']}"
    err_path = job["stderr"] or f"{workdir}/{job['name']}.e{job['seq']}"
    select = f"1:ncpus={ncpus}" + (f":mem={job['memory_mb']}mb" if job["memory_mb"] else "")
    resources: dict[str, Any] = {}
    if job["memory_mb"]:
        resources["mem"] = f"{job['memory_mb']}mb"
    resources.update(ncpus=ncpus, nodect=1, place="pack", select=select)
    if job["walltime"]:
        resources["walltime"] = _hms(job["walltime"])
    rec: dict[str, Any] = {"Job_Name": job["name"], "Job_Owner": f"{job['owner']}@{server}"}
    if started is not None:
        rec["resources_used"] = {
            "cpupercent": 0,
            "cput": "00:00:00",
            "mem": "0kb",
            "ncpus": ncpus,
            "vmem": "0kb",
            "walltime": _hms((ended or time.time()) - started),
        }
    rec.update(job_state=letter, queue=job["queue"], server=server, Checkpoint="u",
               ctime=_ctime(job["submit_time"]), Error_Path=f"{server}:{err_path}")  # fmt: skip
    if started is not None:
        rec["exec_host"] = f"{server}/0"
        rec["exec_vnode"] = f"({server}:ncpus={ncpus})"
    hold = {"user": "u", None: "n"}.get(job["hold_reason"], "s")
    rec.update(Hold_Types=hold if job["state"] == "held" else "n", Join_Path="n",
               Keep_Files="n", Mail_Points="a", mtime=_ctime(ended or started or
               job["submit_time"]), Output_Path=f"{server}:{out_path}", Priority=0,
               qtime=_ctime(job["submit_time"]),
               Rerunable="True" if job["extra"].get("rerunable", True) else "False",
               Resource_List=resources)  # fmt: skip
    if started is not None:
        rec["stime"] = _ctime(started)
    if ended is not None and history:
        rec["obittime"] = _ctime(ended)
    if job["pid"]:
        rec["session_id"] = job["pid"]
    rec["jobdir"] = workdir
    rec["substate"] = substate
    env = {
        "PBS_O_HOME": workdir,
        "PBS_O_LOGNAME": job["owner"],
        "PBS_O_SHELL": "/bin/sh",
        "PBS_O_WORKDIR": workdir,
        "PBS_O_SYSTEM": "Linux",
        "PBS_O_QUEUE": job["queue"],
        "PBS_O_HOST": server,
    }
    env.update(job["extra"].get("env") or {})
    rec["Variable_List"] = env
    comment = None
    if job["state"] == "held" and job["hold_reason"] != "user":
        comment = "job held, too many failed attempts to run"
    elif started is not None:
        run_at = time.strftime("%a %b %d at %H:%M", time.localtime(started))
        comment = f"Job run at {run_at} on ({server}:ncpus={ncpus})"
        if job["state"] == "done":
            comment += " and finished"
    elif job["state"] == "done":
        comment = "Job deleted by user"
    if comment:
        rec["comment"] = comment
    rec["etime"] = _ctime(job["submit_time"])
    if started is not None:
        rec["run_count"] = 1
    if job["state"] == "done" and history:
        status = _exit_status(job, "pbspro")
        if started is not None:
            rec["Stageout_status"] = 1
        if status is not None:
            rec["Exit_status"] = status
    rec["Submit_arguments"] = job["extra"].get("submit_args", job["script"])
    if job["state"] == "done" and history:
        rec["history_timestamp"] = int(ended or time.time())
    rec.update(project="_pbs_project_default", Submit_Host=server)
    return rec


def _noise_table(jobs: list[Job], server: str) -> str:
    """The plain-text table the OpenPBS 23 -u/-F json bug prints before the JSON."""
    lines = [
        f"{server}: ",
        "                                                            Req'd  Req'd   Elap",
        "Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time",
        "--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----",
    ]
    for job in jobs:
        letter = {"queued": "Q", "held": "H", "running": "R"}.get(job["state"], "E")
        lines.append(
            f"{job['id'][:15]:<15} {job['owner'][:8]:<8} {job['queue'][:8]:<8} "
            f"{job['name'][:10]:<10} {str(job['pid'] or '--')[:6]:>6}   1   1    --    --  "
            f"{letter} --"
        )
    return "\n".join(lines) + "\n"


# --- qstat: Torque XML ----------------------------------------------------------------------


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml(obj: dict[str, Any]) -> str:
    parts = []
    for key, value in obj.items():
        inner = _xml(value) if isinstance(value, dict) else _xml_escape(str(value))
        parts.append(f"<{key}>{inner}</{key}>")
    return "".join(parts)


def _torque_job(job: Job, server: str) -> dict[str, Any]:
    letter = {"queued": "Q", "held": "H", "running": "R"}.get(job["state"], "C")
    started, ended = job["start_time"], job["end_time"]
    workdir = job["workdir"]
    ncpus = job["cpus"] or 1
    rec: dict[str, Any] = {
        "Job_Id": job["id"],
        "Job_Name": job["name"],
        "Job_Owner": f"{job['owner']}@{server}",
    }
    if started is not None:
        rec["resources_used"] = {
            "cput": "00:00:00",
            "energy_used": 0,
            "mem": "0kb",
            "vmem": "0kb",
            "walltime": _hms((ended or time.time()) - started),
        }
    resources: dict[str, Any] = {}
    if job["memory_mb"]:
        resources["mem"] = f"{job['memory_mb']}mb"
    resources.update(nodes=f"1:ppn={ncpus}", nodect=1)
    if job["walltime"]:
        resources["walltime"] = _hms(job["walltime"])
    hold = {"user": "u", None: "n"}.get(job["hold_reason"], "s")
    rec.update(job_state=letter, queue=job["queue"], server=server, Checkpoint="u",
               ctime=int(job["submit_time"]),
               Error_Path=f"{server}:{job['stderr'] or workdir + '/' + job['name'] + '.e'}")  # fmt: skip
    if started is not None:
        rec["exec_host"] = f"{server}/0-{ncpus - 1}" if ncpus > 1 else f"{server}/0"
    rec.update(Hold_Types=hold if job["state"] == "held" else "n", Join_Path="n",
               Keep_Files="n", Mail_Points="a",
               mtime=int(ended or started or job["submit_time"]),
               Output_Path=f"{server}:{job['stdout'] or workdir + '/' + job['name'] + '.o'}",
               Priority=0, qtime=int(job["submit_time"]),
               Rerunable="True" if job["extra"].get("rerunable", True) else "False",
               Resource_List=resources)  # fmt: skip
    if job["pid"]:
        rec["session_id"] = job["pid"]
    env = {"PBS_O_QUEUE": job["queue"], "PBS_O_HOME": workdir, "PBS_O_LOGNAME": job["owner"],
           "PBS_O_SHELL": "/bin/sh", "PBS_O_WORKDIR": workdir, "PBS_O_HOST": server,
           "PBS_SERVER": server, **(job["extra"].get("env") or {})}  # fmt: skip
    rec["Variable_List"] = ",".join(f"{k}={v}" for k, v in env.items())
    rec.update(euser=job["owner"], egroup=job["owner"], queue_type="E")
    if job["state"] == "running":
        rec["comment"] = "Job started on " + time.strftime(
            "%a %b %d at %H:%M", time.localtime(started)
        )
    elif job["state"] == "held" and job["hold_reason"] != "user":
        rec["comment"] = "job held, too many failed attempts to run"
    rec["etime"] = int(job["submit_time"])
    if job["state"] == "done":
        status = _exit_status(job, "torque")
        if status is not None:
            rec["exit_status"] = status
    rec["submit_args"] = job["extra"].get("submit_args", job["script"])
    if started is not None:
        rec["start_time"] = int(started)
        if job["walltime"] and job["state"] == "running":
            rec["Walltime"] = {"Remaining": max(0, int(job["walltime"] - (time.time() - started)))}
        rec["start_count"] = 1
    rec.update(fault_tolerant="False", job_radix=0, submit_host=server, init_work_dir=workdir)
    if job["state"] == "done" and ended is not None:
        rec["comp_time"] = int(ended)
    rec["request_version"] = 1
    return rec


LIMITED_USAGE = (
    "Usage:\n    qstat [-f] [-a|-i|-r] [-n [-1]] [-G|-M] [-u user_list] [-? | --help] [job_id...]\n"
)


def _text_attrs(rec: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``qstat -f`` attribute names: nested values become ``parent.child``."""
    out: list[tuple[str, str]] = []
    for key, value in rec.items():
        if key == "Job_Id":
            continue
        if isinstance(value, dict):
            out.extend(_text_attrs(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", str(value)))
    return out


def _torque_text(job: Job, server: str) -> str:
    """One ``Job Id:`` block as Torque's ``qstat -f`` prints it: values wrapped at 79
    columns, mid-token, on continuation lines that start with a TAB."""
    rec = _torque_job(job, server)
    rec.pop("exit_status", None)  # the limited head never shows it
    lines = [f"Job Id: {job['id']}"]
    for key, value in _text_attrs(rec):
        text = f"    {key} = {value}"
        lines.append(text[:79])
        rest = text[79:]
        while rest:
            lines.append("\t" + rest[:71])
            rest = rest[71:]
    return "\n".join(lines) + "\n\n"


def _limited_qstat(head: FakeHead, argv: list[str]) -> Result:
    for word in argv:
        if word.startswith("--") and word not in ("--help",):
            return "", f"Unknown option: {word[2:]}\n{LIMITED_USAGE}", 2
    words = _expand_flags(argv, set())
    ids = [w for w in words if not w.startswith("-")]
    for word in words:
        if word.startswith("-") and word != "-f":
            return "", f"Unknown option: {word[1:]}\n{LIMITED_USAGE}", 2
    if "-f" not in words:
        return "", "fakebatch: only qstat -f is faked for a limited torque head\n", 2
    server = head.config["server"]
    shown: list[Job] = []
    with head.transaction() as queue:
        jobs = queue["jobs"]
        candidates = (
            [jobs.get(i) or jobs.get(_full_id(i, server)) for i in ids]
            if ids
            else sorted(jobs.values(), key=lambda j: j["seq"])
        )
        for job in candidates:
            if job is not None and not job["purged"] and not job["forgotten"]:
                shown.append(dict(job))
    out = "".join(_torque_text(job, server) for job in shown)
    return out, "", 153 if ids and not shown else 0


# --- qstat ----------------------------------------------------------------------------------


def qstat(head: FakeHead, argv: list[str]) -> Result:
    down = _down(head, "qstat")
    if down:
        return down
    flavor = _flavor(head)
    if flavor == "torque" and head.config.get("qstat_limited"):
        return _limited_qstat(head, argv)
    if argv == ["--version"]:
        if flavor == "torque":
            return (
                f"Version: {TORQUE_VERSION}\nCommit: 0000000000000000000000000000000000000000\n",
                "",
                0,
            )
        return f"pbs_version = {PBSPRO_VERSION}\n", "", 0
    flags: set[str] = set()
    fmt = None
    ids: list[str] = []
    words = _expand_flags(argv, {"F"})
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-F" and i + 1 < len(words):
            fmt = words[i + 1].lower()
            i += 1
        elif word in ("-x", "-f", "-w", "-t"):
            flags.add(word)
        elif word.startswith("-"):
            return "", f"qstat: invalid option -- '{word.lstrip('-')}'\nusage: qstat ...\n", 2
        else:
            ids.append(word)
        i += 1
    server = head.config["server"]
    if flavor == "pbspro":
        if not ({"-f"} <= flags and fmt == "json"):
            return "", "fakebatch: only qstat [-x] -f -F json is faked for pbspro\n", 2
        history = "-x" in flags
    else:
        if "-x" not in flags:
            return "", "fakebatch: only qstat -x (XML) is faked for torque\n", 2
        history = False

    errors: list[str] = []
    shown: list[Job] = []
    with head.transaction() as queue:
        jobs = queue["jobs"]
        if ids:
            for native_id in ids:
                job = jobs.get(native_id) or jobs.get(_full_id(native_id, server))
                if job is None or job["purged"]:
                    if flavor == "torque":
                        errors.append(f"qstat: Unknown Job Id Error {_full_id(native_id, server)}")
                    else:
                        errors.append(f"qstat: Unknown Job Id {_full_id(native_id, server)}")
                elif job["forgotten"] and not (history and flavor == "pbspro"):
                    if flavor == "torque":
                        errors.append(f"qstat: Unknown Job Id Error {job['id']}")
                    else:
                        errors.append(
                            f"qstat: {job['id']} Job has finished, use -x or -H to obtain "
                            "historical job information"
                        )
                else:
                    shown.append(dict(job))
        else:
            for job in sorted(jobs.values(), key=lambda j: j["seq"]):
                if job["purged"] or (job["forgotten"] and not (history and flavor == "pbspro")):
                    continue
                shown.append(dict(job))
    stderr = "".join(e + "\n" for e in errors)
    status = 153 if errors else 0  # PBSE_UNKJOBID 15001 & 0xff (also for "has finished": 35)
    out = ""
    if flavor == "pbspro":
        if _noise(head):
            out += _noise_table(shown, server)
        doc: dict[str, Any] = {"timestamp": int(time.time()), "pbs_version": PBSPRO_VERSION,
                               "pbs_server": server}  # fmt: skip
        if shown:
            doc["Jobs"] = {job["id"]: _pbs_job(job, server, history) for job in shown}
        out += _pbs_json(doc)
    else:
        if _noise(head):
            out += "*** fakehead: scheduled maintenance on Sunday ***\n\n"
        if shown or not ids:
            body = "".join(f"<Job>{_xml(_torque_job(job, server))}</Job>" for job in shown)
            out += f"<Data>{body}</Data>\n"
    return out, stderr, status


def _full_id(native_id: str, server: str) -> str:
    return native_id if "." in native_id else f"{native_id}.{server}"


# --- qdel / qhold / qrls ----------------------------------------------------------------------


def _each_id(
    head: FakeHead, command: str, argv: list[str], act: Callable[[dict[str, Any], Job], str | None]
) -> Result:
    down = _down(head, command)
    if down:
        return down
    if not argv:
        return "", f"usage:\n    {command} job_identifier...\n", 2
    flavor = _flavor(head)
    server = head.config["server"]
    errors: list[str] = []
    with head.transaction() as queue:
        for native_id in argv:
            job = queue["jobs"].get(native_id) or queue["jobs"].get(_full_id(native_id, server))
            if job is None or job["purged"] or (job["forgotten"] and flavor == "torque"):
                errors.append(f"{command}: Unknown Job Id {native_id}")
                continue
            problem = act(queue, job)
            if problem:
                errors.append(f"{command}: {problem} {native_id}")
    if errors:
        return "", "".join(e + "\n" for e in errors), 1 if flavor == "pbspro" else 153
    return "", "", 0


def qdel(head: FakeHead, argv: list[str]) -> Result:
    flavor = _flavor(head)

    def act(queue: dict[str, Any], job: Job) -> str | None:
        if job["state"] == "done":
            if flavor == "torque":
                return "Request invalid for state of job MSG=invalid state for job - COMPLETE"
            return "Job has finished"
        head.cancel(queue, job["id"])
        return None

    return _each_id(head, "qdel", argv, act)


def qhold(head: FakeHead, argv: list[str]) -> Result:
    def act(queue: dict[str, Any], job: Job) -> str | None:
        if job["state"] == "queued":
            job.update(state="held", hold_reason="user")
            return None
        if job["state"] == "held":
            return None
        return "Request invalid for state of job"

    return _each_id(head, "qhold", argv, act)


def qrls(head: FakeHead, argv: list[str]) -> Result:
    def act(queue: dict[str, Any], job: Job) -> str | None:
        if job["state"] == "held":
            job.update(state="queued", hold_reason=None)
            return None
        if job["state"] == "done":
            return "Request invalid for state of job"
        return None  # releasing a job that holds nothing is a no-op

    return _each_id(head, "qrls", argv, act)


def qselect(head: FakeHead, argv: list[str]) -> Result:
    """``qselect -u USER``: the ids of that user's jobs still in the queue."""
    if head.faults.get("down"):
        return (
            "",
            f"Connection refused\nqselect: cannot connect to server {head.config['server']} (errno=111)\n",
            1,
        )
    user = argv[argv.index("-u") + 1] if "-u" in argv else None
    with head.transaction() as queue:
        ids = [j["id"] for j in sorted(queue["jobs"].values(), key=lambda j: j["seq"])
               if not j["forgotten"] and (user is None or j["owner"] == user)]  # fmt: skip
    return "".join(i + "\n" for i in ids), "", 0


COMMANDS: dict[str, Callable[[FakeHead, list[str]], Result]] = {
    "qselect": qselect,
    "qsub": qsub,
    "qstat": qstat,
    "qdel": qdel,
    "qhold": qhold,
    "qrls": qrls,
}
