"""``schedctl --help`` lists every exit status, made from the error classes."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from typing import ClassVar

from schedulerd import cli
from schedulerd.errors import SchedulerdError, all_error_classes

CLI_ONLY = {0, 1, 2, 3, 7, 8, 9, 141}


def _help_text() -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULERD_")}
    done = subprocess.run([sys.executable, "-m", "schedulerd.cli", "--help"],
                          check=False, capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _statuses(text: str) -> dict[int, str]:
    """Each listed status and its words, continuation lines joined."""
    listed: dict[int, str] = {}
    status = None
    for line in text.split("exit status:\n", 1)[1].splitlines():
        if match := re.fullmatch(r"\s{0,2}(\d+)  (.*)", line):
            status = int(match[1])
            listed[status] = match[2]
        elif status is not None and line.startswith(" " * 5) and line.strip():
            listed[status] += " " + line.strip()
    return listed


def test_every_error_class_has_its_exit_status_in_the_help() -> None:
    listed = _statuses(_help_text())
    for cls in all_error_classes():
        assert cls.exit_status in listed, (
            f"{cls.__name__}: exit status {cls.exit_status} not in --help"
        )
        assert cls.exit_help in listed[cls.exit_status], cls.__name__
    assert CLI_ONLY <= set(listed)
    assert list(listed) == sorted(listed)


def test_the_help_keeps_the_words_users_know() -> None:
    listed = _statuses(_help_text())
    assert listed[0] == "success"
    assert listed[1] == "wait: some job ended in a state other than completed"
    assert listed[2] == "usage error"
    assert (
        listed[3]
        == "cannot reach the daemon (not running, wrong socket, permission denied, shutting down)"
    )
    assert listed[4] == "no such job"
    assert listed[5] == "the state change is not allowed now (illegal transition, version conflict)"
    assert listed[6].startswith("invalid input (") and "bad job spec" in listed[6]
    assert listed[7] == "wait: timed out"
    assert listed[8] == "cluster check failed"
    assert listed[9].startswith("protocol error (") and "message too large" in listed[9]
    assert listed[10] == "internal daemon error"
    assert listed[11].startswith("the daemon could not write its database")
    assert listed[141].startswith("stdout was closed early") and listed[141].endswith("SIGPIPE")


def test_a_new_error_class_cannot_be_left_out() -> None:
    class Overbooked(SchedulerdError):
        """Too many jobs booked."""

        code: ClassVar[int] = -32099
        exit_status: ClassVar[int] = 12
        exit_help: ClassVar[str] = "the cluster is overbooked"

    class Invalidish(SchedulerdError):
        """Another kind of invalid input."""

        code: ClassVar[int] = -32098
        exit_status: ClassVar[int] = 6
        exit_help: ClassVar[str] = "invalidish input"

    text = cli.exit_codes_help()  # made from the classes there are now, these two among them
    # gone again from SchedulerdError.__subclasses__(), which maps wire codes to classes
    del Overbooked, Invalidish
    gc.collect()
    listed = _statuses(text)
    assert listed[12] == "the cluster is overbooked"
    assert listed[6].startswith("invalid input (") and listed[6].endswith(", invalidish input)")
    assert cli.EXIT_CODES_HELP == cli.exit_codes_help()  # and without them, the help shown
