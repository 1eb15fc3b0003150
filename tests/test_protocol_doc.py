"""Every example in PROTOCOL.md runs, in order, against one fresh daemon.

PROTOCOL.md is the contract for scripts, so its examples are executable: each
```jsonrpc block holds lines ``→ <raw request line>`` followed by the ``← <message>``
lines the daemon must answer with. In expected messages the string ``"…"`` matches any
value, and a string containing ``…`` is a glob (``"…/1"`` matches any string ending in
``/1``). A request shown without ``←`` lines (a notification) must produce nothing: the
next reply read on the connection has to be the next example's. Replies are matched
before notifications (``events.event``), which may arrive before or after the reply of
the request that caused them; notifications must arrive in the order shown.

Between blocks an HTML comment ``<!-- wait: job 1 completed -->`` makes the test poll
``job.get`` (on a second connection) until the job is in that state.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from schedulerd.client import AsyncClient
from schedulerd.errors import all_error_classes
from schedulerd.methods import HANDLERS
from tests.harness import local_settings, running_daemon

DOC = Path(__file__).resolve().parents[1] / "PROTOCOL.md"
WILDCARD = "…"  # U+2026
REPLY_TIMEOUT = 10.0
WAIT_TIMEOUT = 30.0

_STEP = re.compile(
    r"^```jsonrpc[ \t]*\n(?P<body>.*?)^```[ \t]*$"
    r"|<!--\s*wait:\s*job\s+(?P<job>\d+)\s+(?P<state>[a-z]+)\s*-->",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Exchange:
    request: str  # sent exactly as written
    expected: list[Any] = field(default_factory=list)
    line: int = 0

    @property
    def where(self) -> str:
        return f"PROTOCOL.md line {self.line}: {self.request[:120]}"


@dataclass
class Wait:
    job: int
    state: str
    line: int


def parse_doc(text: str) -> list[Exchange | Wait]:
    steps: list[Exchange | Wait] = []
    for match in _STEP.finditer(text):
        first_line = text.count("\n", 0, match.start()) + 1
        if match.group("job") is not None:
            steps.append(Wait(int(match.group("job")), match.group("state"), first_line))
            continue
        current: Exchange | None = None
        for offset, raw in enumerate(match.group("body").split("\n")):
            lineno = first_line + 1 + offset
            if not raw.strip():
                continue
            if raw.startswith("→ "):
                current = Exchange(request=raw[2:], line=lineno)
                steps.append(current)
            elif raw.startswith("← "):
                if current is None:
                    raise AssertionError(f"PROTOCOL.md line {lineno}: a reply before any request")
                try:
                    current.expected.append(json.loads(raw[2:]))
                except json.JSONDecodeError as exc:
                    raise AssertionError(
                        f"PROTOCOL.md line {lineno}: reply is not JSON: {exc}"
                    ) from exc
            else:
                raise AssertionError(
                    f"PROTOCOL.md line {lineno}: jsonrpc blocks hold only '→ ' and '← ' lines"
                )
    return steps


def mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """None when ``actual`` matches ``expected`` (with wildcards), else where it differs."""
    if expected == WILDCARD:
        return None
    if isinstance(expected, str) and WILDCARD in expected:
        if not isinstance(actual, str):
            return f"{path}: expected a string like {expected!r}, got {actual!r}"
        pattern = ".*".join(re.escape(part) for part in expected.split(WILDCARD))
        if re.fullmatch(pattern, actual, re.DOTALL) is None:
            return f"{path}: {actual!r} does not match {expected!r}"
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        if missing or extra:
            return f"{path}: keys differ (missing {missing}, not documented {extra})"
        for key, value in expected.items():
            problem = mismatch(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected an array, got {actual!r}"
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} items, got {len(actual)}: {actual!r}"
        for n, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = mismatch(e, a, f"{path}[{n}]")
            if problem:
                return problem
        return None
    if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
        same = type(expected) is type(actual) and expected == actual
    elif isinstance(expected, int | float) and isinstance(actual, int | float):
        same = expected == actual
    else:
        same = type(expected) is type(actual) and expected == actual
    return None if same else f"{path}: expected {expected!r}, got {actual!r}"


def check_exchange(step: Exchange, received: list[dict[str, Any]]) -> None:
    want_replies = [m for m in step.expected if "id" in m]
    want_notes = [m for m in step.expected if "id" not in m]
    got_replies = [m for m in received if "id" in m]
    got_notes = [m for m in received if "id" not in m]
    assert len(want_replies) <= 1, f"{step.where}: more than one reply documented"
    problems = []
    if len(got_replies) != len(want_replies) or len(got_notes) != len(want_notes):
        problems.append(
            f"expected {len(want_replies)} reply and {len(want_notes)} notifications, "
            f"got {received!r}"
        )
    else:
        for want, got in zip(want_replies + want_notes, got_replies + got_notes, strict=True):
            problem = mismatch(want, got)
            if problem:
                problems.append(f"{problem}\n  full message: {json.dumps(got, ensure_ascii=False)}")
    assert not problems, f"{step.where}\n" + "\n".join(problems)


async def wait_for(waiter: AsyncClient, step: Wait) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    state = None
    while time.monotonic() < deadline:
        state = (await waiter.call("job.get", {"id": step.job}))["state"]
        if state == step.state:
            return
        await anyio.sleep(0.05)
    raise AssertionError(
        f"PROTOCOL.md line {step.line}: job {step.job} is {state}, not {step.state}, "
        f"after {WAIT_TIMEOUT}s"
    )


# --- the doc itself --------------------------------------------------------------------


def test_doc_parses_and_has_examples() -> None:
    steps = parse_doc(DOC.read_text(encoding="utf-8"))
    exchanges = [s for s in steps if isinstance(s, Exchange)]
    assert len(exchanges) >= 20


def test_every_method_has_an_example() -> None:
    shown = set()
    for step in parse_doc(DOC.read_text(encoding="utf-8")):
        if isinstance(step, Exchange):
            try:
                message = json.loads(step.request)
            except json.JSONDecodeError:
                continue
            if isinstance(message, dict) and step.expected and "result" in step.expected[0]:
                shown.add(message.get("method"))
    assert set(HANDLERS) <= shown, f"methods without a successful example: {set(HANDLERS) - shown}"


def test_every_wire_error_code_is_in_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"-32\d\d\d", cells[0]):
            rows[int(cells[0])] = cells
    for cls in all_error_classes():
        if -32020 < cls.code < -32000 or cls.code <= -32600:
            assert cls.code in rows, f"{cls.__name__} ({cls.code}) is not in the error table"
            assert str(cls.exit_status) in rows[cls.code], (
                f"{cls.__name__}: the table does not give schedctl exit status {cls.exit_status}"
            )


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ({"a": "…"}, {"a": [1, 2]}, True),
        ({"a": "…"}, {"a": None}, True),
        ({"a": "…"}, {}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": None}, {"a": 0}, False),
        ({"a": "…/1"}, {"a": "/tmp/x/1"}, True),
        ({"a": "…/1"}, {"a": "/tmp/x/12"}, False),
        ({"a": "x…"}, {"a": 3}, False),
        ([1, 2], [1, 2, 3], False),
        ([{"x": "…"}], [{"x": 1}], True),
    ],
)
def test_matcher(expected: Any, actual: Any, ok: bool) -> None:
    assert (mismatch(expected, actual) is None) is ok


# --- run every example ---------------------------------------------------------------


async def test_protocol_examples_run(tmp_path: Path) -> None:
    steps = parse_doc(DOC.read_text(encoding="utf-8"))
    async with running_daemon(local_settings(tmp_path)) as d:
        client = await d.client()
        waiter = await d.client()
        try:
            for step in steps:
                if isinstance(step, Wait):
                    await wait_for(waiter, step)
                    continue
                await client.send_raw(step.request.encode("utf-8") + b"\n")
                received = []
                for _ in step.expected:
                    try:
                        received.append(await client.read_message(REPLY_TIMEOUT))
                    except TimeoutError:
                        raise AssertionError(
                            f"{step.where}: no answer within {REPLY_TIMEOUT}s; "
                            f"received so far {received!r}"
                        ) from None
                check_exchange(step, received)
            # nothing stray after the last example either
            with anyio.move_on_after(0.3):
                try:
                    extra = await client.read_message(0.3)
                except (TimeoutError, anyio.EndOfStream, json.JSONDecodeError):
                    extra = None
                assert extra is None, f"an undocumented message after the last example: {extra}"
        finally:
            for c in (client, waiter):
                with anyio.CancelScope(shield=True):
                    await c.aclose()


async def test_python_example_from_a_shell_works(tmp_path: Path) -> None:
    """The standard-library script of section "From a shell" submits a job and waits."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2  # this one, then the "Python client" one (tests/test_client.py)
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    async with running_daemon(local_settings(tmp_path)) as d:
        env = {**os.environ, "SCHEDULERD_SOCKET": str(d.socket)}
        with anyio.fail_after(30):
            done = await anyio.run_process([sys.executable, str(script)], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    jid, state, exit_code, stdout = done.stdout.decode().split()
    assert (jid, state, exit_code) == ("1", "completed", "0")
    assert Path(stdout).read_text() == "hi\n"
