"""Reading IBM Spectrum LSF's answers: state map, ``bjobs`` in its three output shapes
(``-json``, ``-o ... delimiter='|'``, the default/wide table), the long formats of
``bhist -l`` / ``bjobs -l`` / ``bacct -l``, ``bsub``/``bkill`` answers, ``lsid``, and
LSF's year-less local times. The commands are built in :mod:`schedulerd.drivers.lsf`;
the refusal table is :mod:`schedulerd.drivers.lsf_refusals`.

Longer than ~500 lines because it is one thing: LSF prints each job in four shapes (three
``bjobs`` modes, the long format) and every shape's parser, with the state map and time
reading they share, lives here beside the others so that a state or field is read the
same way in all of them. Pure functions only; they raise only ParseError, SubmitRejected
or RemoteCommandError.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from schedulerd.drivers.base import Observation, Phase
from schedulerd.drivers.lsf_refusals import DEFAULT_REFUSAL, classify
from schedulerd.errors import ParseError, RemoteCommandError, SubmitRejected

# --- states ------------------------------------------------------------------------------

#: IBM Spectrum LSF 10.1 Command Reference, bjobs, "Output: Default format", field STAT
#: (the job states; also "About job states" in the user guide). ``None`` for DONE/EXIT:
#: decided from the exit code and the exit reason.
STATE_MAP: Final[Mapping[str, Phase | None]] = {
    "PEND": Phase.QUEUED,  # pending: waiting in a queue to be scheduled and dispatched
    "PROV": Phase.QUEUED,  # dispatched to a host that is being provisioned
    "WAIT": Phase.QUEUED,  # chunk job member waiting to run
    "RUN": Phase.RUNNING,  # running
    "PSUSP": Phase.HELD,  # suspended by its owner or the LSF administrator while pending
    "USUSP": Phase.HELD,  # suspended by its owner or the LSF administrator while running
    "SSUSP": Phase.HELD,  # suspended by LSF (load, run window, preemption)
    "UNKWN": Phase.RUNNING,  # mbatchd lost contact with the execution host's sbatchd
    "ZOMBI": Phase.FAILED,  # killed (or requeued) while its execution host was unreachable
    "DONE": None,  # finished with exit status 0
    "EXIT": None,  # finished with a non-zero exit status, or killed
}

#: What we say when the output gives no reason of its own.
DEFAULT_REASONS: Final[Mapping[str, str]] = {
    "PSUSP": "PSUSP: suspended by its owner or the LSF administrator while pending",
    "USUSP": "USUSP: suspended by its owner or the LSF administrator while running",
    "SSUSP": "SSUSP: suspended by LSF (host load, run window or preemption)",
    "UNKWN": "UNKWN: mbatchd lost contact with the execution host",
    "ZOMBI": "ZOMBI: killed while its execution host was unreachable",
}

#: Exit reasons (bjobs ``exit_reason``, bacct/bhist "Completed <exit>; TERM_...") that
#: mean the job ran out of its run limit, or that someone killed it.
TIMEOUT_TERMS: Final = ("TERM_RUNLIMIT", "TERM_DEADLINE")
CANCEL_TERMS: Final = (
    "TERM_OWNER",
    "TERM_ADMIN",
    "TERM_FORCE_OWNER",
    "TERM_FORCE_ADMIN",
    "TERM_REQUEUE_OWNER",
    "TERM_REQUEUE_ADMIN",
)

#: The ``bjobs -o`` fields we ask for (JSON keys are the upper-case names). ``job_name``
#: is last so that the delimited form can keep a ``|`` inside a name.
STATUS_FIELDS: Final = (
    "jobid",
    "jobindex",
    "stat",
    "exit_code",
    "exit_reason",
    "pend_reason",
    "start_time",
    "finish_time",
    "job_name",
)

#: Lines a busy or unreachable mbatchd prints before the real output.
BANNER: Final = re.compile(
    r"^\s*(?:LSF is processing your request\. Please wait \.\.\."
    r"|Cannot connect to LSF\. Please wait \.\.\.|LSF is down\. Please wait \.\.\."
    r"|batch system daemon not responding \.\.\. still trying)\s*$",
    re.IGNORECASE,
)

#: "This id is not (or no longer) known": bjobs, bkill, bhist wordings.
NOT_FOUND: Final = re.compile(
    r"is not found|No matching job found|No job found|No unfinished job found"
    r"|Job has already finished|Job array does not exist",
    re.IGNORECASE,
)

#: "Job <1234> is submitted to queue <normal>." / "... to default queue <normal>."
SUBMITTED: Final = re.compile(
    r"Job <(?P<id>\d+(?:\[\d+\])?)> is submitted to (?:default )?queue <(?P<queue>[^>]*)>"
)

#: bkill/bstop/bresume acknowledgements.
ACKNOWLEDGED: Final = re.compile(
    r"^Job <[^>]+> is being (?:terminated|signaled|signalled|killed|stopped|resumed)"
    r"|^Job <[^>]+>: Operation is in progress"
)

NATIVE_ID: Final = re.compile(r"\d+(?:\[\d+\])?\Z")

# --- small helpers -----------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not BANNER.match(line)]


def _clean(value: object) -> str | None:
    """A field value, or None for the empty/placeholder values LSF prints."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text if text and text != "-" else None


def _int(value: object) -> int | None:
    text = _clean(value)
    if text is None or not re.fullmatch(r"-?\d{1,9}", text):
        return None
    return int(text)


# --- times -------------------------------------------------------------------------------

_MONTHS: Final = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_TIME_MDY: Final = re.compile(
    r"(?:[A-Za-z]{3}\s+)?(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?:\s+(?P<y>\d{4}))?"
    r"(?:\s+[A-Z])?\s*\Z"
)
_TIME_SLASH: Final = re.compile(
    r"(?:(?P<y>\d{4})/)?(?P<mon>\d{1,2})/(?P<day>\d{1,2})-(?P<h>\d{1,2}):(?P<m>\d{2})"
    r"(?::(?P<s>\d{2}))?(?:\s+[A-Z])?\s*\Z"
)


def parse_lsf_time(text: str | None, now: float) -> float | None:
    """Epoch seconds for an LSF time ("Dec 17 00:36 L", "Mon Aug  4 12:28:51 2014",
    "03/31-14:46:42"), read in local time; None when it is not one."""
    if not text:
        return None
    text = text.strip()
    match = _TIME_MDY.match(text)
    if match:
        month = _MONTHS.get(match["mon"].lower())
    else:
        match = _TIME_SLASH.match(text)
        month = int(match["mon"]) if match else None
    if match is None or month is None:
        return None
    day, hour, minute = int(match["day"]), int(match["h"]), int(match["m"])
    second = int(match["s"] or 0)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None

    def _epoch(year: int) -> float | None:
        try:
            return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        except (OverflowError, ValueError):
            return None

    if match["y"]:
        return _epoch(int(match["y"]))
    year = time.localtime(now).tm_year
    found = _epoch(year)
    if found is not None and found > now + 2 * 86400:  # no year: it was last year
        found = _epoch(year - 1)
    return found


# --- observations ------------------------------------------------------------------------


def finished_phase(stat: str, exit_code: int | None, exit_reason: str | None) -> Phase:
    """DONE/EXIT (or a long-format ending) → our phase."""
    reason = (exit_reason or "").upper()
    if any(term in reason for term in TIMEOUT_TERMS) or "RUN TIME LIMIT" in reason:
        return Phase.TIMEOUT
    if any(term in reason for term in CANCEL_TERMS):
        return Phase.CANCELLED
    if stat == "DONE":
        return Phase.COMPLETED if exit_code in (None, 0) else Phase.FAILED
    return Phase.FAILED


def native_id_of(fields: Mapping[str, object]) -> str | None:
    """``JOBID`` (with ``[index]`` for an array element), or None when absent."""
    jobid = _clean(fields.get("JOBID"))
    if jobid is None or not NATIVE_ID.match(jobid):
        return None
    index = _int(fields.get("JOBINDEX"))
    if "[" not in jobid and index:
        jobid = f"{jobid}[{index}]"
    return jobid


def observe_fields(native_id: str, fields: Mapping[str, object], now: float) -> Observation:
    """One ``bjobs -o`` record (upper-case field names) → Observation."""
    stat = (_clean(fields.get("STAT")) or "").upper()
    if stat not in STATE_MAP:
        raise ParseError(f"LSF job {native_id}: unknown state {stat!r}")
    exit_code = _int(fields.get("EXIT_CODE"))
    exit_reason = _clean(fields.get("EXIT_REASON"))
    pend_reason = _clean(fields.get("PEND_REASON"))
    started_at = parse_lsf_time(_clean(fields.get("START_TIME")), now)
    finished_at: float | None = None
    phase = STATE_MAP[stat]
    reason: str | None
    if phase is None:
        if stat == "DONE" and exit_code is None:
            exit_code = 0
        phase = finished_phase(stat, exit_code, exit_reason)
        reason = exit_reason
        # while a job runs, FINISH_TIME is a projection from its run limit
        finished_at = parse_lsf_time(_clean(fields.get("FINISH_TIME")), now)
    elif stat in ("PEND", "PSUSP", "PROV", "WAIT"):
        reason = pend_reason.rstrip(";").strip() if pend_reason else None
        reason = reason or DEFAULT_REASONS.get(stat)
    else:
        reason = DEFAULT_REASONS.get(stat)
    return Observation(
        native_id=native_id,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        name=_clean(fields.get("JOB_NAME")),
        started_at=started_at,
        finished_at=finished_at,
    )


# --- bjobs -json ---------------------------------------------------------------------------


def bjobs_json_records(stdout: str) -> list[dict[str, object]] | None:
    """The ``RECORDS`` of a ``bjobs -json`` document (banner lines before it skipped);
    None when stdout holds no JSON document."""
    start = None
    offset = 0
    for line in stdout.splitlines(keepends=True):
        if line.lstrip().startswith("{"):
            start = offset + (len(line) - len(line.lstrip()))
            break
        offset += len(line)
    if start is None:
        return None
    try:
        document, _ = json.JSONDecoder().raw_decode(stdout, start)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"bjobs -json: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ParseError("bjobs -json: the document is not an object")
    records = document.get("RECORDS", [])
    if not isinstance(records, list):
        raise ParseError("bjobs -json: RECORDS is not a list")
    found: list[dict[str, object]] = []
    for record in records:
        if not isinstance(record, dict):
            raise ParseError("bjobs -json: a record is not an object")
        found.append({str(key).upper(): value for key, value in record.items()})
    return found


# --- bjobs -noheader -o "... delimiter='|'" --------------------------------------------------


def parse_delimited(
    stdout: str, fields: Sequence[str], delimiter: str = "|"
) -> list[dict[str, object]]:
    """Rows of ``bjobs -noheader -o "<fields> delimiter='|'"``; the last field may itself
    contain the delimiter. Lines without a delimiter (banners) are skipped."""
    names = [name.upper() for name in fields]
    rows: list[dict[str, object]] = []
    for line in _lines(stdout):
        if delimiter not in line:
            continue
        values = line.strip().split(delimiter, len(names) - 1)
        if len(values) != len(names):
            raise ParseError(f"bjobs: expected {len(names)} fields: {line[:200]!r}")
        rows.append(dict(zip(names, values, strict=True)))
    return rows


# --- bjobs [-w] [-W] (default / wide table) -------------------------------------------------

_ROW: Final = re.compile(
    r"^\s*(?P<id>\d+(?:\[\d+\])?)\s+(?P<user>\S+)\s+(?P<stat>[A-Z]+)\s+(?P<rest>.*)$"
)
_MDY_TAIL: Final = re.compile(r"^[A-Z][a-z]{2}$")


def parse_table(stdout: str) -> list[dict[str, object]]:
    """Rows of the default/``-w``/``-W`` ``bjobs`` table (JOBID USER STAT QUEUE FROM_HOST
    EXEC_HOST JOB_NAME SUBMIT_TIME [...]). EXEC_HOST is blank for a pending job; a name
    with spaces of a pending job without an exec host is read one word short."""
    lines = _lines(stdout)
    header: list[str] | None = None
    rows: list[dict[str, object]] = []
    for line in lines:
        if line.split()[:1] == ["JOBID"]:
            header = line.split()
            continue
        match = _ROW.match(line)
        if match is None:
            continue  # a wrapped EXEC_HOST continuation line, or a note under the table
        if match["stat"] not in STATE_MAP:
            # a job row whose state we do not know: skipping it would read as "left"
            raise ParseError(f"bjobs: unknown state {match['stat']!r} in {line[:200]!r}")
        tokens = match["rest"].split()
        row: dict[str, object] = {
            "JOBID": match["id"],
            "USER": match["user"],
            "STAT": match["stat"],
        }
        extra: list[str] = []
        if header and "SUBMIT_TIME" in header:
            after = header[header.index("SUBMIT_TIME") + 1 :]
            if after and len(tokens) > len(after):
                extra, tokens = (
                    tokens[len(tokens) - len(after) :],
                    tokens[: len(tokens) - len(after)],
                )
                row.update(zip(after, extra, strict=True))
        # SUBMIT_TIME: "Oct 31 13:00" (3 words) or "03/31-14:46:42" (1 word)
        if len(tokens) >= 3 and _MDY_TAIL.match(tokens[-3]):
            row["SUBMIT_TIME"] = " ".join(tokens[-3:])
            tokens = tokens[:-3]
        elif tokens and _TIME_SLASH.match(tokens[-1]):
            row["SUBMIT_TIME"] = tokens[-1]
            tokens = tokens[:-1]
        for key, value in zip(("QUEUE", "FROM_HOST"), tokens, strict=False):
            row[key] = value
        if len(tokens) == 3:
            row["JOB_NAME"] = tokens[2]
        elif len(tokens) > 3:
            row["EXEC_HOST"], row["JOB_NAME"] = tokens[2], " ".join(tokens[3:])
        element = re.search(r"\[(\d+)\]\Z", str(row.get("JOB_NAME") or ""))
        if element and "[" not in match["id"]:
            row["JOBINDEX"] = element[1]  # array element: "name[7]"
        rows.append(row)
    return rows


# --- long formats: bhist -l, bjobs -l, bacct -l ----------------------------------------------

_EVENT: Final = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?: \d{4})?): (?P<text>.*)$"
)
_YEAR_EVENT: Final = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4}: ")
_RECORD_START: Final = re.compile(r"^Job <(?P<id>\d+(?:\[\d+\])?)>,")
_SEPARATOR: Final = re.compile(r"^-{20,}\s*$")


def _logical_lines(block: list[str]) -> list[str]:
    """Undo LSF's wrapping: continuation lines are indented 21 columns (26 when the
    timestamps carry a year) and split words anywhere."""
    width = 26 if any(_YEAR_EVENT.match(line) for line in block) else 21
    logical: list[str] = []
    for line in block:
        line = line.rstrip("\n")
        indent = len(line) - len(line.lstrip(" "))
        if logical and indent >= 20 and line.strip():
            logical[-1] += line[min(indent, width) :]
        else:
            logical.append(line)
    return logical


@dataclass(slots=True)
class _LongRecord:
    native_id: str
    name: str | None = None
    status: str | None = None
    state: str = "PEND"
    exit_code: int | None = None
    term: str | None = None
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lines: list[str] = field(default_factory=list)


def long_records(text: str) -> list[list[str]]:
    """Split ``bhist -l``/``bjobs -l``/``bacct -l`` output into per-job logical lines."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if BANNER.match(line):
            continue
        if _RECORD_START.match(line):
            current = [line]
            blocks.append(current)
        elif _SEPARATOR.match(line) or line.startswith("SUMMARY:"):
            current = None
        elif current is not None:
            current.append(line)
    return [_logical_lines(block) for block in blocks]


def _observe_long(lines: list[str], now: float) -> Observation:
    head = lines[0]
    match = _RECORD_START.match(head)
    if match is None:  # pragma: no cover - long_records only starts blocks on a match
        raise ParseError(f"LSF long format: no job id in {head[:200]!r}")
    rec = _LongRecord(native_id=match["id"])
    name = re.search(r"Job Name <(?P<v>[^>]*)>", head)
    rec.name = name["v"] if name else None
    status = re.search(r"Status <(?P<v>[A-Z]+)>", head)
    rec.status = status["v"] if status else None
    for line in lines[1:]:
        event = _EVENT.match(line)
        if event is None:
            continue
        ts = parse_lsf_time(event["ts"], now)
        body = event["text"]
        code = re.search(r"Exited with exit code (\d{1,9})", body)
        if body.startswith("Submitted from host"):
            rec.state = "PEND"
        elif re.match(r"(?:\[\d+\] )?(?:[Dd]ispatched|Start|Running with)", body):
            rec.state = "RUN"
            rec.started_at = rec.started_at if rec.started_at is not None else ts
            rec.reason = None
        elif body.startswith("Suspended") or "suspended by" in body.lower():
            rec.state = "USUSP" if rec.started_at is not None else "PSUSP"
            rec.reason = body.rstrip(";. ")
        elif body.startswith("Resume"):
            rec.state = "RUN" if rec.started_at is not None else "PEND"
            rec.reason = None
        elif body.startswith("Done successfully"):
            rec.state, rec.exit_code, rec.finished_at = "DONE", 0, ts
        elif code:
            rec.state, rec.exit_code, rec.finished_at = "EXIT", int(code[1]), ts
        elif body.startswith("Exited"):
            signal = re.search(r"Exited by (?:LSF )?signal (\d{1,3})", body)
            rec.state, rec.finished_at = "EXIT", ts
            rec.exit_code = 128 + int(signal[1]) if signal else rec.exit_code
        elif body.startswith("Completed <"):
            rec.state = "DONE" if body.startswith("Completed <done>") else "EXIT"
            rec.finished_at = rec.finished_at or ts
            term = re.search(r"(TERM_[A-Z_]+)(?::\s*(.*))?", body)
            if term:
                rec.term = term[1]
                rec.reason = f"{term[1]}: {term[2]}".rstrip(". ") if term[2] else term[1]
    stat = rec.status or rec.state
    if stat not in STATE_MAP:
        raise ParseError(f"LSF job {rec.native_id}: unknown state {stat!r}")
    phase = STATE_MAP[stat]
    if phase is None:
        exit_code = 0 if stat == "DONE" and rec.exit_code is None else rec.exit_code
        return Observation(
            native_id=rec.native_id,
            phase=finished_phase(stat, exit_code, rec.term),
            exit_code=exit_code,
            reason=rec.reason,
            name=rec.name,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
        )
    return Observation(
        native_id=rec.native_id,
        phase=phase,
        reason=rec.reason or DEFAULT_REASONS.get(stat),
        name=rec.name,
        started_at=rec.started_at,
    )


def parse_long(text: str, now: float) -> dict[str, Observation]:
    """Every job record of ``bhist -l`` / ``bjobs -l`` / ``bacct -l`` output."""
    return {obs.native_id: obs for obs in (_observe_long(b, now) for b in long_records(text))}


# --- errors ------------------------------------------------------------------------------


def _complaints(stdout: str, stderr: str) -> list[str]:
    """stderr lines that are not banners or 'not found' notes."""
    return [line for line in _lines(stderr) if not NOT_FOUND.search(line)]


def _raise_if_unreachable(stdout: str, stderr: str, exit_status: int, command: str) -> None:
    """A passing (mbatchd/LIM unreachable) or credential wording anywhere: that failure."""
    row = classify(f"{stderr}\n{stdout}")
    if row is not None and row.kind != "permanent":
        what = "LSF cannot be reached" if row.kind == "transient" else "our credentials refused"
        raise RemoteCommandError(
            f"{command}: {what}: {stderr.strip()[:300] or stdout.strip()[:300]}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row.kind == "transient",
            auth=row.kind == "auth",
        )


def _raise_for_complaints(stdout: str, stderr: str, exit_status: int, command: str) -> None:
    complaints = _complaints(stdout, stderr)
    if exit_status != 0 and complaints:
        row = classify("\n".join(complaints))
        raise RemoteCommandError(
            f"{command} failed: {' / '.join(complaints)[:300]}",
            exit_status=exit_status,
            stderr=stderr,
            transient=row is not None and row.kind == "transient",
            auth=row is not None and row.kind == "auth",
        )


def _raise_unless_empty_answer(stdout: str, stderr: str, command: str) -> None:
    """Nothing listed: only LSF's own "nothing found" wording ("No job found", "No
    unfinished job found", "No matching job found", "Job <n> is not found") is an empty
    answer; anything else (no output at all, a shell's or a wrapper's text) is not one."""
    lines = _lines(stdout) + _lines(stderr)
    if not lines or not all(NOT_FOUND.search(line) for line in lines):
        raise ParseError(
            f"{command}: output not understood: {stdout.strip()[:200]!r} / {stderr.strip()[:200]!r}"
        )


# --- version -----------------------------------------------------------------------------

_VERSION_LINE: Final = re.compile(
    r"^(?P<product>(?:IBM Spectrum LSF|IBM Platform LSF|Platform LSF|LSF|openlava project"
    r"|OpenLava|Volclava)[^,]*?)\s*(?:,|\s+[A-Z][a-z]{2}\s+\d{1,2}\s+\d{4}|$)",
    re.IGNORECASE,
)


def parse_lsid(stdout: str, stderr: str, exit_status: int) -> str:
    """``lsid`` banner → "IBM Spectrum LSF Standard 10.1.0.6", "openlava project 2.2", ..."""
    for line in _lines(stdout):
        match = _VERSION_LINE.match(line.strip())
        if match:
            return str(match["product"]).strip()
    _raise_if_unreachable(stdout, stderr, exit_status, "lsid")
    raise ParseError(f"lsid: no version banner in {stdout[:200]!r} / {stderr[:200]!r}")


def version_numbers(version: str) -> tuple[int, ...]:
    """(10, 1, 0, 6) from "IBM Spectrum LSF Standard 10.1.0.6"; (7, 6) from "Platform LSF 7
    Update 6"; () when there is no number."""
    update = re.search(r"\b(\d+)\s+Update\s+(\d+)", version)
    if update:
        return (int(update[1]), int(update[2]))
    numbers = re.search(r"\b(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in numbers[1].split(".")) if numbers else ()


# --- the commands' answers ----------------------------------------------------------------


def parse_bsub(stdout: str, stderr: str, exit_status: int) -> str:
    """The job id from bsub's answer; SubmitRejected for a refusal (classed by
    :data:`~schedulerd.drivers.lsf_refusals.REFUSALS`), ParseError for anything else."""
    for line in _lines(stdout) + _lines(stderr):
        match = SUBMITTED.search(line)
        if match:
            return match["id"]
    message = " / ".join(_lines(stderr) + _lines(stdout))[:500]
    text = f"{stderr}\n{stdout}"
    row = classify(text)
    if row is not None or exit_status != 0 or "Job not submitted" in text:
        kind = DEFAULT_REFUSAL if row is None else row.kind
        raise SubmitRejected(
            f"bsub: {message or f'exit status {exit_status}'}",
            transient=kind == "transient",
            auth=kind == "auth",
        )
    raise ParseError(f"bsub: no job id in {stdout[:200]!r} / {stderr[:200]!r}")


def parse_bjobs(stdout: str, stderr: str, exit_status: int, now: float) -> dict[str, Observation]:
    """Every job ``bjobs`` listed, in any of its three output shapes (``now``: to place
    year-less times)."""
    records = bjobs_json_records(stdout)
    if records is None:
        body = [line for line in _lines(stdout) if not NOT_FOUND.search(line)]
        if any("|" in line for line in body):
            records = parse_delimited(stdout, STATUS_FIELDS)
        elif any(line.split()[:1] == ["JOBID"] for line in body):
            records = parse_table(stdout)
        elif body:
            _raise_if_unreachable(stdout, stderr, exit_status, "bjobs")
            raise ParseError(f"bjobs: output not understood: {stdout[:200]!r}")
        else:
            _raise_if_unreachable(stdout, stderr, exit_status, "bjobs")
            _raise_for_complaints(stdout, stderr, exit_status, "bjobs")
            _raise_unless_empty_answer(stdout, stderr, "bjobs")
            return {}
    found: dict[str, Observation] = {}
    for record in records:
        if _clean(record.get("ERROR")):
            continue  # "Job <n> is not found" as a record
        native_id = native_id_of(record)
        if native_id is None:
            continue  # a record without an id cannot be one of ours
        found[native_id] = observe_fields(native_id, record, now)
    return found


def parse_bhist(stdout: str, stderr: str, exit_status: int, now: float) -> dict[str, Observation]:
    """The jobs ``bhist -l`` (or ``bjobs -l``, ``bacct -l``) describes."""
    found = parse_long(stdout, now)
    if not found:
        _raise_if_unreachable(stdout, stderr, exit_status, "bhist")
        _raise_for_complaints(stdout, stderr, exit_status, "bhist")
        _raise_unless_empty_answer(stdout, stderr, "bhist")
    return found


def parse_bkill(stdout: str, stderr: str, exit_status: int) -> None:
    """Accept bkill/bstop/bresume acknowledgements and "not found" notes; raise
    RemoteCommandError for a refusal, ParseError for text that is not LSF's."""
    _raise_if_unreachable(stdout, stderr, exit_status, "bkill")
    complaints = [
        line
        for line in _lines(stderr) + _lines(stdout)
        if not NOT_FOUND.search(line) and not ACKNOWLEDGED.search(line)
    ]
    if not complaints:
        return
    row = classify("\n".join(complaints))
    lsf_words = row is not None or any(re.match(r"Job <[^>]+>", c) for c in complaints)
    if exit_status == 0 and not lsf_words:
        # neither LSF's acknowledgement nor its refusal: a wrapper's or a shell's text
        raise ParseError(f"bkill: output not understood: {' / '.join(complaints)[:300]!r}")
    raise RemoteCommandError(
        f"bkill failed: {' / '.join(complaints)[:300]}",
        exit_status=exit_status,
        stderr=stderr,
        transient=row is not None and row.kind == "transient",
        auth=row is not None and row.kind == "auth",
    )


def observations_by_id(
    records: Iterable[Mapping[str, object]], now: float
) -> dict[str, Observation]:
    """Observations for records that carry an id (helper for tests and tools)."""
    found: dict[str, Observation] = {}
    for record in records:
        native_id = native_id_of(record)
        if native_id is not None:
            found[native_id] = observe_fields(native_id, record, now)
    return found
