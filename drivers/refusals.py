"""Refusal tables: how a batch system's error wordings are classed.

Each dialect keeps ONE module-level table (``REFUSALS``) of :class:`Refusal` rows, ordered
from the most specific wording to the most general; the first row whose pattern occurs
in a command's output decides whether the refusal is ``transient`` (retry later, no
attempt spent), ``permanent`` (this job never) or ``auth`` (our credentials: no retry
helps). Every row carries where its wording comes from and a real sample; the tests
check each sample against its own table. Pure data, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, NamedTuple

RefusalKind = Literal["transient", "permanent", "auth"]


class Refusal(NamedTuple):
    """One row of a refusal table: a wording, its class, where the wording comes from, and
    a real sample of it (the tests check every row's sample against its table)."""

    pattern: re.Pattern[str]
    kind: RefusalKind
    source: str
    sample: str


def refusal(pattern: str, kind: RefusalKind, source: str, sample: str) -> Refusal:
    """A row whose ``pattern`` is searched case-insensitively, ``^``/``$`` at every line."""
    return Refusal(re.compile(pattern, re.IGNORECASE | re.MULTILINE), kind, source, sample)


def first_match(table: Iterable[Refusal], text: str) -> Refusal | None:
    """The first row of ``table`` whose wording occurs in ``text``, or None."""
    for row in table:
        if row.pattern.search(text):
            return row
    return None
