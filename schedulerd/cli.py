"""``schedctl``: the command-line client of the control socket.

Longer than ~500 lines because it is one thing: the argument parser of every subcommand
and, beside each, the short function that turns one method's reply into text or
``--json``, sharing the output, error and exit-status conventions. The socket client it
uses is :mod:`schedulerd.client`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
import time
import uuid
from datetime import datetime
from typing import Any, NoReturn

from schedulerd.client import Client, RpcError
from schedulerd.config import default_socket_path, default_state_dir, load_settings
from schedulerd.errors import (
    EXIT_STATUS_SUMMARY,
    ConfigError,
    JobNotFound,
    SchedulerdError,
    UnknownDependency,
)
from schedulerd.units import parse_duration

EXIT_OK = 0
EXIT_NOT_ALL_COMPLETED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 7
EXIT_CHECK_FAILED = 8
EXIT_PROTOCOL = 9
EXIT_STDOUT_CLOSED = 141  # what a shell shows for a command killed by SIGPIPE
MAX_IDS_PER_CALL = 100_000  # job.states takes at most this many ids
CLUSTER_CHECK_INTERVAL = 5.0  # wait: seconds between looks at the clusters' health

#: what schedctl's own exit statuses mean (the others come from the error classes)
_CLI_EXIT_HELP = {
    EXIT_OK: "success",
    EXIT_NOT_ALL_COMPLETED: "wait: some job ended in a state other than completed",
    EXIT_USAGE: "usage error",
    EXIT_TIMEOUT: "wait: timed out",
    EXIT_CHECK_FAILED: "cluster check failed",
    EXIT_STDOUT_CLOSED: "stdout was closed early (e.g. `schedctl ls | head -1`); nothing is "
    "reported, as with any command killed by SIGPIPE",
}
#: cases schedctl itself adds to a status of the error classes
_CLI_EXIT_CASES = {
    EXIT_UNREACHABLE: ("not running", "wrong socket"),
    EXIT_PROTOCOL: ("unreadable reply",),
}


def exit_codes_help() -> str:
    """The ``exit status:`` part of ``schedctl --help``: one line per status, made from
    schedctl's own statuses and each error class's ``exit_status`` and ``exit_help``."""
    cases: dict[int, list[str]] = {s: list(c) for s, c in _CLI_EXIT_CASES.items()}
    for cls in _in_definition_order(SchedulerdError):
        found = cases.setdefault(cls.exit_status, [])
        if cls.exit_help not in found:
            found.append(cls.exit_help)
    lines = ["exit status:"]
    for status in sorted(_CLI_EXIT_HELP.keys() | cases.keys()):
        summary = _CLI_EXIT_HELP.get(status) or EXIT_STATUS_SUMMARY.get(status)
        listed = ", ".join(cases.get(status, ()))
        if summary and listed:
            text = f"{summary} ({listed})"
        else:
            text = summary or listed
        lines += textwrap.wrap(text, width=90, initial_indent=f"{status:>3}  ",
                               subsequent_indent=" " * 5, break_on_hyphens=False)  # fmt: skip
    return "\n".join(lines) + "\n"


def _in_definition_order(root: type[SchedulerdError]) -> list[type[SchedulerdError]]:
    """``root`` and all its subclasses, each before its own, in the order they are defined."""
    return [root, *(c for sub in root.__subclasses__() for c in _in_definition_order(sub))]


EXIT_CODES_HELP = exit_codes_help()


class StdoutClosed(Exception):
    """Whoever read our stdout went away (``schedctl ls | head -1``)."""


def _out(text: str) -> None:
    """Print one line on stdout, all of it now; a closed stdout raises StdoutClosed, never
    an OSError that would be mistaken for a lost daemon.

    Written with os.write until every byte is out: an unbuffered stdout
    (PYTHONUNBUFFERED) takes a short write when the reader goes away in the middle of
    it, and TextIOWrapper would drop the rest without a word."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (an embedding program's)
        sys.stdout.write(text + "\n")
        return
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    view = memoryview((text + "\n").encode(encoding, errors="replace"))
    try:
        sys.stdout.flush()  # whatever print() left in its buffer goes first
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError as exc:
        raise StdoutClosed from exc


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError as exc:
        raise StdoutClosed from exc


def _err(text: str) -> None:
    try:
        print(f"schedctl: {text}", file=sys.stderr)
    except BrokenPipeError:
        pass  # nobody is listening: nothing to tell


# --- formatting ---------------------------------------------------------------------------


def _time(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _show(job: dict[str, Any]) -> str:
    keys = ["id", "name", "state", "final", "exit_code", "attempt", "max_attempts", "cluster",
            "queue", "cpus", "memory", "walltime", "account", "env", "native_id", "campaign",
            "reason", "created_at", "queued_at", "started_at", "finished_at", "workdir",
            "stdout", "stderr", "argv", "after"]  # fmt: skip
    lines = []
    for key in keys:
        value: Any = job.get(key)
        if key.endswith("_at"):
            value = _time(value)
        elif key == "final":
            value = "-" if value is None else ("yes" if value else "no")
        elif key == "memory":
            value = "-" if job.get("memory_mb") is None else f"{job['memory_mb']} MB"
        elif key == "walltime":
            value = _walltime(job.get("walltime_s"))
        elif key == "env":
            value = (
                " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted((value or {}).items())) or "-"
            )
        elif key == "argv":
            value = " ".join(json.dumps(a) if " " in a or not a else a for a in value or [])
        elif key == "after":
            value = " ".join(map(str, value or [])) or "-"
        elif value is None:
            value = "-"
        lines.append(f"{key + ':':<14}{value}")
    return "\n".join(lines)


def _walltime(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}"


def _event_line(ev: dict[str, Any]) -> str:
    arrow = f"{ev['from'] or '(new)'} -> {ev['to']}"
    extra = f"  {ev['reason']}" if ev.get("reason") else ""
    return f"{ev['cursor']:>8}  {_time(ev['at'])}  job {ev['job_id']:<8} {arrow}{extra}"


# --- commands -----------------------------------------------------------------------------


def _parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _usage(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _usage(message: str) -> NoReturn:
    _err(message)
    raise SystemExit(EXIT_USAGE)


def _duration(text: str) -> float:
    """argparse type for ``--timeout``: ``90``, ``2s``, ``5m``, ``1h30m``, ``01:30:00``."""
    try:
        return parse_duration(text, what="--timeout")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _usage("submit needs a command after --")
    job: dict[str, Any] = {"argv": argv}
    for key in ("cluster", "queue", "name", "cpus", "memory", "walltime", "account"):
        value = getattr(args, key)
        if value is not None:
            job[key] = value
    if args.workdir is not None:
        job["workdir"] = (
            os.path.abspath(args.workdir) if not args.workdir.startswith("~") else args.workdir
        )
    if args.env:
        job["env"] = _parse_env(args.env)
    if args.after:
        job["after"] = args.after
    if args.retries:
        job["retries"] = args.retries
    # the idempotency key: a script that re-runs `submit --token T` after losing the
    # reply (a timeout, a daemon restart) gets the same job instead of a second one
    token = args.token if args.token is not None else str(uuid.uuid4())
    try:
        result = client.call("job.submit", {"job": job, "token": token})
    except RpcError as exc:
        if exc.code == UnknownDependency.code and isinstance(exc.data, dict):
            missing = exc.data.get("missing") or []
            if missing:  # say which option: the daemon only knows the field "after"
                raise RpcError(exc.code, f"--after {missing[0]}: no job with id {missing[0]}",
                                  exc.data) from exc  # fmt: skip
        raise
    _out(json.dumps({"id": result["id"]}) if args.json else str(result["id"]))
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    job = client.call("job.get", {"id": args.id})
    _out(json.dumps(job) if args.json else _show(job))
    return EXIT_OK


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("state", "campaign", "cluster", "name"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    result = client.call("job.list", params)
    jobs = result["jobs"]
    if args.json:
        _out(json.dumps({"jobs": jobs, "next": result.get("next")}))
        return EXIT_OK
    rows = [
        [str(j["id"]), j["name"], j["state"], "-" if j["exit_code"] is None else str(j["exit_code"]),
         str(j["attempt"]), j["cluster"], j["native_id"] or "-", _time(j["created_at"])]
        for j in jobs
    ]  # fmt: skip
    _out(_table(rows, ["ID", "NAME", "STATE", "EXIT", "TRY", "CLUSTER", "NATIVE_ID", "CREATED"]))
    return EXIT_OK


def _cmd_action(method: str):  # type: ignore[no-untyped-def]
    def run(client: Client, args: argparse.Namespace) -> int:
        params: dict[str, Any] = {"ids": args.ids}
        if args.if_version is not None:
            params = {"id": args.ids[0], "if_version": args.if_version}
            if len(args.ids) != 1:
                _usage("--if-version goes with a single job")
        result = client.call(method, params)
        if args.json:
            _out(json.dumps(result))
        else:
            for job in result["jobs"]:
                _out(f"{job['id']}\t{job['state']}")
        return EXIT_OK

    return run


def _campaign_ids(client: Client, campaign: str) -> list[int]:
    ids: list[int] = []
    params: dict[str, Any] = {"campaign": campaign, "limit": 10000}
    while True:
        page = client.call("job.list", params)
        ids += [j["id"] for j in page["jobs"]]
        if page.get("next") is None:
            break
        params["before"] = page["next"]
    if not ids:
        raise RpcError(JobNotFound.code, f"campaign {campaign!r} has no jobs")
    return ids


def _job_states(client: Client, ids: list[int]) -> tuple[int, dict[int, dict[str, Any]]]:
    """job.states over any number of ids: the smallest cursor of the calls (a
    subscription from it misses nothing) and each job's state; unknown ids are an error."""
    cursor: int | None = None
    states: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        result = client.call("job.states", {"ids": ids[start : start + MAX_IDS_PER_CALL]})
        missing = result["missing"]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise RpcError(JobNotFound.code, f"no job with id {missing[0]}{more}",
                              {"missing": missing[:100]})  # fmt: skip
        cursor = result["cursor"] if cursor is None else min(cursor, result["cursor"])
        states.update((j["id"], j) for j in result["jobs"])
    return cursor or 0, states


class ClusterWatch:
    """Tells a waiting user (on stderr) when a cluster their jobs wait on is degraded,
    once per change, looking at ``clusters.list`` at most every few seconds."""

    def __init__(self, client: Client, interval: float = CLUSTER_CHECK_INTERVAL) -> None:
        self.client = client
        self.interval = interval
        self.next_check = time.monotonic()
        self.seen: dict[str, tuple[bool, str | None]] = {}

    def seconds_left(self) -> float:
        return max(0.0, self.next_check - time.monotonic())

    def check(self, clusters: set[str]) -> None:
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.interval
        for status in self.client.call("clusters.list")["clusters"]:
            name = status.get("name")
            if name not in clusters:
                continue
            now = (bool(status.get("degraded")), status.get("degraded_reason"))
            before = self.seen.get(name, (False, None))
            self.seen[name] = now
            if now == before:
                continue
            if now[0]:
                why = _one_line(now[1] or status.get("last_error") or "its polls fail")
                _err(f"waiting on cluster {name}, which is degraded: {why}")
            else:
                _err(f"cluster {name} is no longer degraded")


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    """Block until every job is final (job.get's ``final``), at a cost that follows the
    changes: one ``job.states`` for the set, then only the jobs whose events arrive."""
    if args.campaign:
        ids = _campaign_ids(client, args.campaign)
    elif args.ids:
        ids = list(dict.fromkeys(args.ids))
    else:
        _usage("wait needs job ids or --campaign")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    # read the states, then follow the log from a cursor taken before that read: a
    # change in between arrives as an event too, and a second look costs nothing
    cursor, states = _job_states(client, ids)
    waiting = {jid for jid, job in states.items() if not job["final"]}
    if waiting:
        client.call("events.subscribe", {"since": cursor, "ids": ids})
        watch = ClusterWatch(client)
        while waiting:
            watch.check({states[jid]["cluster"] for jid in waiting})
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            wake = watch.seconds_left() if left is None else min(left, watch.seconds_left())
            note = client.next_notification(timeout=wake)
            if note is None:
                continue
            changed = {note["params"]["job_id"]}
            while len(changed) < MAX_IDS_PER_CALL and (note := client.next_notification(0)):
                changed.add(note["params"]["job_id"])
            _, fresh = _job_states(client, sorted(changed & states.keys()))
            for jid, job in fresh.items():
                states[jid] = job
                if job["final"]:
                    waiting.discard(jid)
                else:
                    waiting.add(jid)
    timed_out = bool(waiting)
    if args.json:
        _out(json.dumps({"jobs": [{"id": j["id"], "state": j["state"], "final": j["final"],
                                   "exit_code": j["exit_code"]} for j in states.values()],
                         "timed_out": timed_out}))  # fmt: skip
    elif timed_out:
        rest = sorted(waiting)
        more = f" (and {len(rest) - 20} more)" if len(rest) > 20 else ""
        _err(f"timed out; not final yet: {' '.join(map(str, rest[:20]))}{more}")
    else:
        for jid, final in states.items():
            if final["state"] != "completed":
                _out(f"{jid}\t{final['state']}")
    if timed_out:
        return EXIT_TIMEOUT
    return (
        EXIT_OK
        if all(j["state"] == "completed" for j in states.values())
        else EXIT_NOT_ALL_COMPLETED
    )


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    cursor = args.since or 0
    collected: list[dict[str, Any]] = []
    while True:
        page = client.call("events.list", {"since": cursor, "limit": 10000})
        for ev in page["events"]:
            if args.json and not args.follow:
                collected.append(ev)
            elif args.json:
                _out(json.dumps(ev))
            else:
                _out(_event_line(ev))
        cursor = page["cursor"]
        if len(page["events"]) < 10000:
            break
    if args.json and not args.follow:
        _out(json.dumps({"events": collected, "cursor": cursor}))
    if not args.follow:
        return EXIT_OK
    client.call("events.subscribe", {"since": cursor})
    while (note := client.next_notification(timeout=None)) is not None:
        ev = note["params"]
        _out(json.dumps(ev) if args.json else _event_line(ev))
    return EXIT_OK


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.ping")
    _out(json.dumps(result) if args.json else f"pong (schedulerd {result['version']})")
    return EXIT_OK


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.call("daemon.info")
    if args.json:
        _out(json.dumps(info))
        return EXIT_OK
    _out(f"schedulerd {info['version']}  pid {info['pid']}  up {info['uptime']:.0f}s")
    _out(f"socket:   {info['socket']}\ndatabase: {info['database']}")
    jobs = info["jobs"]
    _out("jobs:     " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    rows = [[c["name"], c["scheduler"], c["host"] or "-", str(c["max_jobs"]), _cluster_state(c),
             _one_line(c.get("degraded_reason") or c["last_error"])] for c in info["clusters"]]  # fmt: skip
    _out(_table(rows, ["CLUSTER", "SCHEDULER", "HOST", "MAX_JOBS", "STATE", "ERROR"]))
    return EXIT_OK


def cmd_clusters(client: Client, args: argparse.Namespace) -> int:
    if args.action is None:
        result = client.call("clusters.list")
        if args.json:
            _out(json.dumps({"clusters": result["clusters"]}))
            return EXIT_OK
        rows = [[c["name"], c["scheduler"], c["host"] or "-", str(c["max_jobs"]),
                 str(c["foreign_jobs"]), "yes" if c["draining"] else "no", _cluster_state(c),
                 _time(c["last_poll"]), _one_line(c.get("degraded_reason") or c["last_error"])]
                for c in result["clusters"]]  # fmt: skip
        _out(_table(rows, ["NAME", "SCHEDULER", "HOST", "MAX_JOBS", "FOREIGN", "DRAINING",
                           "STATE", "LAST_POLL", "LAST_ERROR"]))  # fmt: skip
        return EXIT_OK
    if args.action == "check":
        report = client.call("clusters.check", {"name": args.name})
        if args.json:
            _out(json.dumps(report))
        else:
            for check in report["checks"]:
                status = "ok" if check["ok"] else "FAIL"
                _out(f"{status:<4}  {check['name']:<8}  {_one_line(check['detail'])}")
        return EXIT_OK if report["ok"] else EXIT_CHECK_FAILED
    status = client.call(f"clusters.{args.action}", {"name": args.name})
    if args.json:
        _out(json.dumps(status))
    else:
        _out(f"{status['name']}\t{'draining' if status['draining'] else 'accepting jobs'}")
    return EXIT_OK


def _cluster_state(c: dict[str, Any]) -> str:
    """One word for a cluster's health: what an operator looks at first."""
    if c.get("submits_stopped"):
        return "stopped"  # the head refused our credentials: clusters resume once fixed
    if c.get("degraded"):
        return "degraded"
    if c.get("draining"):
        return "draining"
    return "ok"


def _one_line(text: str | None) -> str:
    return "-" if not text else " ".join(str(text).split())


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.shutdown")
    _out(json.dumps(result) if args.json else "stopping")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout")  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="schedctl",
        description="Control a running schedulerd.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--socket", help="control socket (env SCHEDULERD_SOCKET)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "submit", parents=[common], help="submit one job: submit [options] -- CMD [ARG...]"
    )
    p.add_argument(
        "--cluster", help="configured cluster to run on (default: local, else the first)"
    )
    p.add_argument(
        "--queue", help="batch queue or partition (default: the cluster's default_queue)"
    )
    p.add_argument(
        "--name", help="job name: letters, digits and _.+- (default: the command's name)"
    )
    p.add_argument("--cpus", type=int, metavar="N", help="cores to request")
    p.add_argument("--memory", help="memory to request, e.g. 4G, 512M")
    p.add_argument(
        "--walltime", help="run time limit, e.g. 1h, 30m, 01:00:00; the job ends timeout"
    )
    p.add_argument("--account", help="account or project to charge")
    p.add_argument("--workdir", metavar="DIR",
                   help="directory the job runs in, on the cluster; {id} becomes the job id "
                        "(default: <cluster workdir>/<id>)")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable for the job (repeatable)")  # fmt: skip
    p.add_argument("--after", action="append", type=int, default=[], metavar="ID",
                   help="start only once job ID completed; skipped if it does not (repeatable)")  # fmt: skip
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="run a job that ends failed, timeout or lost again, up to N more times: "
                        "N+1 attempts in all (default 0: one attempt)")  # fmt: skip
    p.add_argument("--token", metavar="T",
                   help="idempotency key (1-200 characters): the same T again prints the"
                        " same id and creates nothing (default: a new random one)")  # fmt: skip
    p.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- then the command and its arguments"
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("show", parents=[common], help="one job")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("ls", parents=[common], help="jobs, newest first")
    p.add_argument("--state", help="only jobs in this state")
    p.add_argument("--campaign", help="only jobs of this campaign")
    p.add_argument("--cluster", help="only jobs of this cluster")
    p.add_argument("--name", help="only jobs of this name")
    p.add_argument("--limit", type=int, default=100, help="at most this many jobs (default 100)")
    p.set_defaults(func=cmd_ls)

    for name in ("cancel", "hold", "release", "retry"):
        p = sub.add_parser(name, parents=[common], help=f"{name} jobs")
        p.add_argument("ids", type=int, nargs="+", metavar="ID")
        p.add_argument("--if-version", type=int, help="only if the job is still at this version")
        p.set_defaults(func=_cmd_action(f"job.{name}"))

    p = sub.add_parser("wait", parents=[common],
                       help="block until jobs are final; exit 0 only if all completed")  # fmt: skip
    p.add_argument("ids", type=int, nargs="*", metavar="ID")
    p.add_argument("--campaign", help="wait for every job of this campaign")
    p.add_argument("--timeout", type=_duration, metavar="DURATION",
                   help="give up after this long (90, 90s, 5m, 1h30m, 01:30:00); exit 7")  # fmt: skip
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("events", parents=[common], help="the event log")
    p.add_argument("--follow", "-f", action="store_true", help="keep streaming new events")
    p.add_argument(
        "--since", type=int, default=0, metavar="CURSOR", help="only events after this cursor"
    )
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("clusters", parents=[common], help="heads: list, check, drain, resume")
    p.set_defaults(func=cmd_clusters, action=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    for name, text in (("check", "self-test a head; exit 8 if a check fails"),
                       ("drain", "submit nothing new to a head"),
                       ("resume", "undo drain")):  # fmt: skip
        a = actions.add_parser(name, parents=[common], help=text)
        a.add_argument("name", metavar="NAME")

    for name, func, text in (("ping", cmd_ping, "is the daemon there"),
                             ("info", cmd_info, "daemon status"),
                             ("shutdown", cmd_shutdown, "stop the daemon")):  # fmt: skip
        p = sub.add_parser(name, parents=[common], help=text)
        p.set_defaults(func=func)
    return parser


def resolve_socket(flag: str | None) -> str:
    if flag:
        return flag
    if os.environ.get("SCHEDULERD_SOCKET"):
        return os.environ["SCHEDULERD_SOCKET"]
    try:
        return str(load_settings().socket_path)
    except ConfigError:
        return str(default_socket_path(default_state_dir()))


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # also after argparse printed --help and exited
    except (StdoutClosed, BrokenPipeError):
        # Only stdout gets here: every write to the daemon's socket is inside _run, whose
        # handlers report a broken socket as a lost daemon (exit 3). Like a command killed
        # by SIGPIPE: no message; stdout goes to /dev/null so that the interpreter's last
        # flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_STDOUT_CLOSED


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    path = resolve_socket(args.socket)
    try:
        client = Client(path)
    except ConnectionError as exc:
        _report(args, EXIT_UNREACHABLE, str(exc), -32000)
        return EXIT_UNREACHABLE
    try:
        status = int(args.func(client, args))
        _flush_stdout()
        return status
    except RpcError as exc:
        _report(args, exc.exit_status, exc.message, exc.code, exc.data)
        return exc.exit_status
    except (ConnectionError, TimeoutError, OSError) as exc:
        _report(args, EXIT_UNREACHABLE, f"lost the daemon: {exc}", -32000)
        return EXIT_UNREACHABLE
    except json.JSONDecodeError as exc:
        _report(args, EXIT_PROTOCOL, f"unreadable reply: {exc}", -32700)
        return EXIT_PROTOCOL
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _report(
    args: argparse.Namespace, status: int, message: str, code: int, data: Any = None
) -> None:
    if args.json:
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if data is not None:
            body["error"]["data"] = data
        _out(json.dumps(body))
    else:
        _err(message)


if __name__ == "__main__":
    sys.exit(main())
