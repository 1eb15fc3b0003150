"""Checks for values that reach a job script or a head's shell as text.

Argv lists are joined with ``shlex.join`` and paths quoted with ``shlex.quote`` where
they are used (invariant 6); what quoting cannot protect is a value that must stay on
one line of a script (a directive, a path in a directive, a submit description line):
those are checked here, each caller keeping its own message. Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

#: a control character: it would end a directive line (newline, carriage return) or is
#: read differently by each tool (NUL, escape, DEL)
CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")


def is_one_line(value: str) -> bool:
    """Whether ``value`` has no line break and no NUL (the shell and every directive
    parser would cut it there)."""
    return "\n" not in value and "\r" not in value and "\0" not in value
