"""``schedctl``: the command-line client of the control socket."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NoReturn

from schedulerd.config import default_socket_path, default_state_dir, load_settings
from schedulerd.errors import ConfigError, error_class_for_code

EXIT_OK = 0
EXIT_NOT_ALL_COMPLETED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 7
EXIT_CHECK_FAILED = 8
EXIT_PROTOCOL = 9

EXIT_CODES_HELP = """\
exit status:
  0  success
  1  wait: some job ended in a state other than completed
  2  usage error
  3  cannot reach the daemon (not running, wrong socket, permission denied, shutting down)
  4  no such job
  5  the state change is not allowed now (illegal transition, version conflict)
  6  invalid input (bad job spec, unknown cluster, unknown dependency, cycle)
  7  wait: timed out
  8  cluster check failed
  9  protocol error (malformed request or reply, unknown method, message too large)
 10  internal daemon error
"""

TERMINAL = {"completed", "failed", "timeout", "lost", "cancelled", "skipped"}


class RemoteError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def exit_status(self) -> int:
        return error_class_for_code(self.code).exit_status


class Client:
    """A blocking JSON-RPC client: one request at a time, notifications queued."""

    def __init__(self, path: str, timeout: float | None = 60.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise ConnectionError(f"cannot connect to schedulerd at {path}: {exc.strerror or exc}") from exc
        self.file = self.sock.makefile("rb")
        self.next_id = 1
        self.pending: list[dict[str, Any]] = []

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ConnectionError(f"unexpected reply {line[:200]!r}")
        return obj

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        req_id = self.next_id
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}}
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read()
            if "id" not in reply and "method" in reply:
                self.pending.append(reply)
                continue
            if reply.get("id") not in (req_id, None):
                continue
            if "error" in reply:
                err = reply["error"]
                raise RemoteError(int(err.get("code", -32603)), str(err.get("message")), err.get("data"))
            return reply.get("result")

    def notifications(self, timeout: float | None) -> Iterator[dict[str, Any]]:
        """Yield notifications until ``timeout`` (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self.pending:
                yield self.pending.pop(0)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                reply = self._read()
            except TimeoutError:
                return
            if "method" in reply and "id" not in reply:
                yield reply


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
    keys = ["id", "name", "state", "exit_code", "attempt", "max_attempts", "cluster", "queue",
            "native_id", "campaign", "reason", "created_at", "queued_at", "started_at",
            "finished_at", "workdir", "stdout", "stderr", "argv", "after"]  # fmt: skip
    lines = []
    for key in keys:
        value = job.get(key)
        if key.endswith("_at"):
            value = _time(value)
        elif key == "argv":
            value = " ".join(json.dumps(a) if " " in a or not a else a for a in value or [])
        elif value is None or value == []:
            value = "-"
        lines.append(f"{key + ':':<14}{value}")
    return "\n".join(lines)


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
    print(f"schedctl: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


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
        job["workdir"] = os.path.abspath(args.workdir) if not args.workdir.startswith("~") else args.workdir
    if args.env:
        job["env"] = _parse_env(args.env)
    if args.after:
        job["after"] = args.after
    if args.retries:
        job["retries"] = args.retries
    result = client.call("job.submit", {"job": job})
    if args.json:
        print(json.dumps({"id": result["id"]}))
    else:
        print(result["id"])
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    job = client.call("job.get", {"id": args.id})
    print(json.dumps(job) if args.json else _show(job))
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
        print(json.dumps({"jobs": jobs, "next": result.get("next")}))
        return EXIT_OK
    rows = [
        [str(j["id"]), j["name"], j["state"], "-" if j["exit_code"] is None else str(j["exit_code"]),
         str(j["attempt"]), j["cluster"], j["native_id"] or "-", _time(j["created_at"])]
        for j in jobs
    ]  # fmt: skip
    print(_table(rows, ["ID", "NAME", "STATE", "EXIT", "TRY", "CLUSTER", "NATIVE_ID", "CREATED"]))
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
            print(json.dumps(result))
        else:
            for job in result["jobs"]:
                print(f"{job['id']}\t{job['state']}")
        return EXIT_OK

    return run


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    if args.campaign:
        ids: list[int] = []
        before = None
        while True:
            page = client.call("job.list", {"campaign": args.campaign, "limit": 10000,
                                            "before": before} if before else
                               {"campaign": args.campaign, "limit": 10000})  # fmt: skip
            ids += [j["id"] for j in page["jobs"]]
            before = page.get("next")
            if before is None:
                break
        if not ids:
            raise RemoteError(-32001, f"campaign {args.campaign!r} has no jobs")
    elif args.ids:
        ids = list(args.ids)
    else:
        _usage("wait needs job ids or --campaign")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    # subscribe first, then read states: no transition can slip between the two
    client.call("events.subscribe", {"ids": ids} if len(ids) <= 1000 else {})
    states = {jid: client.call("job.get", {"id": jid})["state"] for jid in ids}
    wanted = set(ids)
    while any(s not in TERMINAL for s in states.values()):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        for note in client.notifications(timeout=left if left is None else min(left, 30)):
            ev = note.get("params", {})
            if ev.get("job_id") in wanted:
                states[ev["job_id"]] = ev["to"]
                if all(s in TERMINAL for s in states.values()):
                    break
    done = all(s in TERMINAL for s in states.values())
    if args.json:
        print(json.dumps({"jobs": [{"id": j, "state": s} for j, s in states.items()],
                          "timed_out": not done}))  # fmt: skip
    elif not done:
        waiting = [j for j, s in states.items() if s not in TERMINAL]
        print(f"timed out; still running: {' '.join(map(str, waiting[:20]))}", file=sys.stderr)
    else:
        for jid, state in states.items():
            if state != "completed":
                print(f"{jid}\t{state}")
    if not done:
        return EXIT_TIMEOUT
    return EXIT_OK if all(s == "completed" for s in states.values()) else EXIT_NOT_ALL_COMPLETED


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    cursor = args.since or 0
    collected: list[dict[str, Any]] = []
    while True:
        page = client.call("events.list", {"since": cursor, "limit": 10000})
        for ev in page["events"]:
            if args.json and not args.follow:
                collected.append(ev)
            elif args.json:
                print(json.dumps(ev), flush=True)
            else:
                print(_event_line(ev), flush=True)
        cursor = page["cursor"]
        if len(page["events"]) < 10000:
            break
    if args.json and not args.follow:
        print(json.dumps({"events": collected, "cursor": cursor}))
    if not args.follow:
        return EXIT_OK
    client.call("events.subscribe", {"since": cursor})
    for note in client.notifications(timeout=None):
        ev = note["params"]
        print(json.dumps(ev) if args.json else _event_line(ev), flush=True)
    return EXIT_OK


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.ping")
    print(json.dumps(result) if args.json else f"pong (schedulerd {result['version']})")
    return EXIT_OK


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.call("daemon.info")
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    print(f"schedulerd {info['version']}  pid {info['pid']}  up {info['uptime']:.0f}s")
    print(f"socket:   {info['socket']}\ndatabase: {info['database']}")
    jobs = info["jobs"]
    print("jobs:     " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    rows = [[c["name"], c["scheduler"], c["host"] or "-", str(c["max_jobs"]),
             c["last_error"] or "ok"] for c in info["clusters"]]  # fmt: skip
    print(_table(rows, ["CLUSTER", "SCHEDULER", "HOST", "MAX_JOBS", "STATUS"]))
    return EXIT_OK


def cmd_clusters(client: Client, args: argparse.Namespace) -> int:
    if args.action is None:
        result = client.call("clusters.list")
        if args.json:
            print(json.dumps({"clusters": result["clusters"]}))
            return EXIT_OK
        rows = [[c["name"], c["scheduler"], c["host"] or "-", str(c["max_jobs"]),
                 str(c["foreign_jobs"]), "yes" if c["draining"] else "no", _time(c["last_poll"]),
                 _one_line(c["last_error"])] for c in result["clusters"]]  # fmt: skip
        print(_table(rows, ["NAME", "SCHEDULER", "HOST", "MAX_JOBS", "FOREIGN", "DRAINING",
                            "LAST_POLL", "LAST_ERROR"]))  # fmt: skip
        return EXIT_OK
    if args.action == "check":
        report = client.call("clusters.check", {"name": args.name})
        if args.json:
            print(json.dumps(report))
        else:
            for check in report["checks"]:
                status = "ok" if check["ok"] else "FAIL"
                print(f"{status:<4}  {check['name']:<8}  {_one_line(check['detail'])}")
        return EXIT_OK if report["ok"] else EXIT_CHECK_FAILED
    status = client.call(f"clusters.{args.action}", {"name": args.name})
    if args.json:
        print(json.dumps(status))
    else:
        print(f"{status['name']}\t{'draining' if status['draining'] else 'accepting jobs'}")
    return EXIT_OK


def _one_line(text: str | None) -> str:
    return "-" if not text else " ".join(str(text).split())


def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.shutdown")
    print(json.dumps(result) if args.json else "stopping")
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

    p = sub.add_parser("submit", parents=[common], help="submit one job: submit [options] -- CMD [ARG...]")
    p.add_argument("--cluster")
    p.add_argument("--queue")
    p.add_argument("--name")
    p.add_argument("--cpus", type=int)
    p.add_argument("--memory", help="e.g. 4G, 512M")
    p.add_argument("--walltime", help="e.g. 1h, 30m, 01:00:00")
    p.add_argument("--account")
    p.add_argument("--workdir")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--after", action="append", type=int, default=[], metavar="ID")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("show", parents=[common], help="one job")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("ls", parents=[common], help="jobs, newest first")
    p.add_argument("--state")
    p.add_argument("--campaign")
    p.add_argument("--cluster")
    p.add_argument("--name")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_ls)

    for name in ("cancel", "hold", "release", "retry"):
        p = sub.add_parser(name, parents=[common], help=f"{name} jobs")
        p.add_argument("ids", type=int, nargs="+", metavar="ID")
        p.add_argument("--if-version", type=int, help="only if the job is still at this version")
        p.set_defaults(func=_cmd_action(f"job.{name}"))

    p = sub.add_parser("wait", parents=[common], help="block until jobs are terminal")
    p.add_argument("ids", type=int, nargs="*", metavar="ID")
    p.add_argument("--campaign")
    p.add_argument("--timeout", type=float)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("events", parents=[common], help="the event log")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--since", type=int, default=0)
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
        return int(args.func(client, args))
    except RemoteError as exc:
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


def _report(args: argparse.Namespace, status: int, message: str, code: int, data: Any = None) -> None:
    if args.json:
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if data is not None:
            body["error"]["data"] = data
        print(json.dumps(body))
    else:
        print(f"schedctl: {message}", file=sys.stderr)



if __name__ == "__main__":
    sys.exit(main())
