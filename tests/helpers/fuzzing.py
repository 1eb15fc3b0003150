"""Fuzzing a dialect's parsers: whatever the text, they raise only our errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from schedulerd.drivers.dialect import Dialect
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

Parser = Callable[[str, str, int], object]

#: what a parser may raise on any text
ALLOWED = (ParseError, RemoteCommandError, SubmitRejected)

#: 150 examples, no deadline (a loaded machine is slow)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: 300 examples, no deadline, no example database
FUZZ_MORE = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


#: edits for ``apply_edits``: up to six (position, characters cut, insert)
EDITS = st.lists(
    st.tuples(st.integers(0, 20000), st.integers(0, 40), st.text(max_size=8)), max_size=6
)


def parsers_of(dialect: Dialect) -> list[Parser]:
    """Every parser of a dialect's command outputs."""
    return [
        dialect.parse_status,
        dialect.parse_history,
        dialect.parse_submit,
        dialect.parse_cancel,
        dialect.parse_version,
    ]


def fixture_texts(folder: Path, suffix: str | None = None) -> list[str]:
    """The texts of the captured outputs in ``folder`` (with ``suffix``, those files only)."""
    if not folder.is_dir():
        raise RuntimeError(f"batch-output fixtures not found at {folder}")
    return [
        p.read_text()
        for p in sorted(folder.iterdir())
        if p.is_file() and (suffix is None or p.suffix == suffix)
    ]


def only_our_errors(parsers: Iterable[Parser], stdout: str, stderr: str, status: int) -> None:
    """Each parser returns or raises one of ``ALLOWED`` (anything else fails the test)."""
    for parse in parsers:
        try:
            parse(stdout, stderr, status)
        except ALLOWED:
            pass


def on_either_stream(parsers: Iterable[Parser], text: str, status: int) -> None:
    """``only_our_errors`` with ``text`` on stdout, then on stderr."""
    for out, err in ((text, ""), ("", text)):
        only_our_errors(parsers, out, err, status)


def insert_at(text: str, cut: int, insert: str) -> str:
    """``text`` with ``insert`` put in at ``cut`` (modulo its length)."""
    cut = cut % (len(text) + 1)
    return text[:cut] + insert + text[cut:]


def apply_edits(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """``text`` with each edit (position modulo the length, characters cut, insert) done."""
    for pos, cut, insert in edits:
        pos = pos % (len(text) + 1)
        text = text[:pos] + insert + text[pos + cut :]
    return text


def only_our_errors_after_edits(
    parsers: Iterable[Parser], base: str, edits: Iterable[tuple[int, int, str]]
) -> None:
    """``only_our_errors`` on ``base`` edited: as a success's stdout, then as a failure's
    stdout and stderr."""
    text = apply_edits(base, edits)
    only_our_errors(parsers, text, "", 0)
    only_our_errors(parsers, text, text, 1)
