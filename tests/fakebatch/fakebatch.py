"""Entry point of the fake batch system's commands: ``fakebatch.py --home DIR COMMAND ARGS``.

The shims that ``FakeHead.create`` writes call this with the command name they stand
for. Every call is appended to ``calls.log`` so tests can count commands.
"""

from __future__ import annotations

import json
import os
import sys
import time

# Run as a script (the shims do), Python puts this file's folder first on sys.path: put the
# repository's root there instead, so the fake is imported one way, as ``tests.fakebatch``.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.fakebatch.core import FakeHead  # noqa: E402 -- after the sys.path fix above


def _dispatch(head: FakeHead, command: str, argv: list[str]) -> tuple[str, str, int]:
    flavor = head.config["flavor"]
    if flavor in ("pbspro", "torque"):
        from tests.fakebatch import pbs as system
    elif flavor == "lsf":
        from tests.fakebatch import lsf as system
    elif flavor == "htcondor":
        from tests.fakebatch import condor as system
    elif flavor == "slurm":
        from tests.fakebatch import slurm as system
    else:
        return "", f"fakebatch: unknown flavor {flavor}\n", 2
    handler = system.COMMANDS.get(command)
    if handler is None:
        return "", f"{command}: command not found\n", 127
    return handler(head, argv)


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "--home":
        print("usage: fakebatch.py --home DIR COMMAND [ARGS...]", file=sys.stderr)
        return 2
    head = FakeHead(args[1])
    command, argv = args[2], args[3:]
    if command == "__run":
        head.run_job(argv[0], node_fail="--node-fail" in argv)
        return 0
    with open(head.home / "calls.log", "a") as log:
        log.write(json.dumps([command, *argv]) + "\n")
    hang = (head.faults.get("hang") or {}).get(command)
    if hang:
        time.sleep(float(hang))
    stdout, stderr, status = _dispatch(head, command, argv)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
