"""Torque (and PBS-derived systems that speak its ``qstat -x`` XML).

Shares the ``#PBS`` directives, ``qsub``/``qdel`` wordings and exit-status encoding with
:mod:`schedulerd.drivers.pbspro`. Differences: resources are ``-l nodes=1:ppn=N`` and
``-l mem=``; ``qstat -x`` means *XML* here (not history); completed jobs stay in the
queue as ``C`` for the server's ``keep_completed`` seconds and there is no history a
regular user can query (``tracejob`` reads the server logs, which normally needs root:
see ``torque/tracejob.permission-denied-logs.stderr.txt``), so the exit file decides.

Torque-compatible heads differ. Some ``qstat`` implementations (Slurm's ``qstat``
wrapper, stripped-down PBS front ends) take no ``-x`` and no ``--version`` and show a
finished job as ``C`` without ``exit_status``. :meth:`TorqueDialect.probe_argv` asks a
head whose ``qstat --version`` named no Torque version whether ``-x`` is understood;
:meth:`TorqueDialect.for_probe` returns the dialect to use, which falls back to
``qstat -f`` text (``Job Id:`` blocks). A ``C`` job
without ``exit_status`` is left out of the status result, so the driver treats it as
having left the queue and its exit file decides (after ``exit_read_timeout`` without one
it is lost and retried): the queue cannot tell a job that ran and failed from one that
was deleted before it ran.

The XML is read with patterns rather than an XML parser on purpose: Torque writes
element text raw (``sched_hint`` with newlines, and values it does not always escape),
so a strict parser would throw away a whole poll for one odd attribute.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Final

from schedulerd.drivers.base import JobRequest, Observation, Phase
from schedulerd.drivers.pbspro import (
    PbsProDialect,
    common_directives,
    parse_full_text,
    parse_qstat_common,
    positive,
    raise_if_unreachable,
)
from schedulerd.errors import ParseError

#: TORQUE Administrator Guide, qstat(1B) "job_state" / Appendix "Job States": the state
#: letters. ``None``: completed, decide from exit_status.
TORQUE_STATE_MAP: Final[Mapping[str, Phase | None]] = {
    "C": None,  # completed (kept for keep_completed seconds)
    "E": Phase.RUNNING,  # exiting after having run
    "H": Phase.HELD,  # held
    "Q": Phase.QUEUED,  # queued, eligible to run or be routed
    "R": Phase.RUNNING,  # running
    "T": Phase.QUEUED,  # being moved to a new location
    "W": Phase.QUEUED,  # waiting for its execution time
    "S": Phase.HELD,  # suspended
}

#: Torque's JOB_EXEC_OVERLIMIT_WT (``pbs_job.h``): killed for exceeding its walltime.
TORQUE_WALLTIME_EXIT: Final = -11

_JOB: Final = re.compile(r"<Job>(.*?)(?:</Job>|\Z)", re.DOTALL)
_WANTED: Final = (
    "Job_Id",
    "Job_Name",
    "job_state",
    "exit_status",
    "Hold_Types",
    "comment",
    "start_time",
    "comp_time",
)
_ELEMENT: Final = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in _WANTED}


def parse_xml_jobs(text: str) -> dict[str, dict[str, object]]:
    """The ``<Job>`` records of ``qstat -x`` output (one or more ``<Data>`` documents,
    possibly after banner lines), keyed by ``Job_Id``; jobs without an id are skipped."""
    if "<Job>" not in text:
        stripped = text.strip()
        if not stripped or "<Data" in stripped or "<Data/>" in stripped:
            return {}
        raise ParseError(f"no <Data> in qstat -x output: {stripped[:200]!r}")
    jobs: dict[str, dict[str, object]] = {}
    for record in _JOB.finditer(text):
        body = record.group(1)
        attrs: dict[str, object] = {}
        for tag, pattern in _ELEMENT.items():
            match = pattern.search(body)
            if match:
                attrs[tag] = html.unescape(match.group(1)).strip()
        native_id = attrs.pop("Job_Id", None)
        if isinstance(native_id, str) and native_id:
            jobs[native_id] = attrs
    return jobs


#: what a ``qstat`` that does not know an option prints (Getopt::Long "Unknown option: x",
#: glibc getopt "invalid option -- 'x'", BSD getopt "illegal option -- x", ...).
_OPTION_REFUSED: Final = re.compile(
    r"unknown option|invalid option|illegal option|unrecognized option|bad option"
    r"|option .{0,20}not (?:recognized|supported)",
    re.IGNORECASE,
)
#: PBSE_UNKJOBID & 0xff: the exit status of a qstat that found none of the ids
QSTAT_UNKNOWN_JOBS_EXIT: Final = 153


def _decided_by_queue(attrs: Mapping[str, object]) -> bool:
    """False for a ``C`` job without ``exit_status``: the exit file decides it."""
    state = attrs.get("job_state")
    if isinstance(state, str) and state.strip()[:1] == "C":
        return attrs.get("exit_status", attrs.get("Exit_status")) not in (None, "")
    return True


def _torque_jobs(stdout: str) -> Mapping[str, Mapping[str, object]]:
    jobs: Mapping[str, Mapping[str, object]]
    if "<Job>" not in stdout and "<Data" not in stdout and "Job Id:" in stdout:
        jobs = parse_full_text(stdout)
    else:
        jobs = parse_xml_jobs(stdout)
    return {native_id: attrs for native_id, attrs in jobs.items() if _decided_by_queue(attrs)}


def parse_probe(stdout: str, stderr: str, exit_status: int) -> bool:
    """Whether the head's ``qstat`` takes ``-x`` (XML), from ``qstat -x 0``'s answer.

    Only a refused option means no: "Unknown Job Id" (the usual answer), XML, or any
    other complaint about the id leave XML on. An unreachable server raises
    ``RemoteCommandError(transient=True)``: nothing was learnt, ask again later.
    """
    text = f"{stdout}\n{stderr}"
    if _OPTION_REFUSED.search(text):
        return False
    if exit_status != 0 and "<Data" not in stdout and re.search(r"(?im)^\s*usage:", text):
        return False
    raise_if_unreachable(stderr, exit_status, stdout)
    return True


class TorqueDialect(PbsProDialect):
    """Torque 2.x-6.x: PBS Pro's commands (qsub, qdel, qhold, qrls, qselect, version),
    with its own resource syntax, XML status and no queryable history. With
    ``xml=False`` (a head whose ``qstat`` has no ``-x``) status is ``qstat -f`` text."""

    name = "torque"

    def __init__(self, *, xml: bool = True) -> None:
        self.xml = xml

    def directives(self, job: JobRequest) -> list[str]:
        resources = []
        if job.cpus is not None:
            resources.append(f"nodes=1:ppn={positive('cpus', job.cpus)}")
        if job.memory_mb is not None:
            resources.append(f"mem={positive('memory_mb', job.memory_mb)}mb")
        return common_directives(job, resources)

    def status_argv(self, user: str, native_ids: Sequence[str]) -> list[str]:
        # Torque's "-u user" belongs to the alternate table format (qstat(1B) synopsis
        # 2) and cannot be combined with -f/-x; without ids qstat -x returns every job
        # the server shows us, which on a big site is everybody's. So: our ids only.
        if not native_ids:
            return ["true"]  # nothing to ask; qstat with no ids would list every job
        return ["qstat", "-x" if self.xml else "-f", *native_ids]

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
        if exit_status == QSTAT_UNKNOWN_JOBS_EXIT and not stdout.strip() and not stderr.strip():
            # Slurm's qstat wrapper: none of the ids is known, and it says nothing
            return {}
        return parse_qstat_common(
            stdout,
            stderr,
            exit_status,
            _torque_jobs,
            TORQUE_STATE_MAP,
            walltime_exit=TORQUE_WALLTIME_EXIT,
        )

    def history_argv(self, user: str, native_ids: Sequence[str], since: float) -> list[str] | None:
        return None  # no history a regular user can query (see the module docstring)

    def probe_argv(self, version: str | None) -> list[str] | None:
        """Does ``qstat`` take ``-x``? Torque's own qstat (it answers ``--version``) has
        had XML since 2.1: no question. Any other head is asked ``qstat -x 0``: option
        parsing comes before the id lookup in every implementation, and job 0 never
        exists, so the answer is cheap and clear."""
        if version is not None and version.startswith("Torque "):
            return None
        return ["qstat", "-x", "0"]

    def for_probe(self, stdout: str, stderr: str, exit_status: int) -> tuple[TorqueDialect, str]:
        """The dialect for this head, and a line for ``clusters check``."""
        if parse_probe(stdout, stderr, exit_status):
            return TorqueDialect(xml=True), "qstat -x (XML)"
        return TorqueDialect(xml=False), "qstat -f text (this qstat has no -x)"


# --- what a job may ask for (checked at job.submit) -------------------------------------------

#: Torque reads ``ppn`` of ``nodes=1:ppn=N`` into a C int
TORQUE_MAX_CPUS: Final = 2**31 - 1


def validate_job(job: JobRequest) -> list[str]:
    """Why Torque could never take ``job``; empty when it can (see ``pbspro.validate_pbs``)."""
    from schedulerd.drivers.pbspro import validate_pbs

    return validate_pbs(job, TorqueDialect(), max_cpus=TORQUE_MAX_CPUS, system="Torque")
