"""Torque (and PBS-derived systems that speak its ``qstat -x`` XML).

Shares the ``#PBS`` directives, ``qsub``/``qdel`` wordings and exit-status encoding with
:mod:`schedulerd.drivers.pbspro`. Differences: resources are ``-l nodes=1:ppn=N`` and
``-l mem=``; ``qstat -x`` means *XML* here (not history); completed jobs stay in the
queue as ``C`` for the server's ``keep_completed`` seconds and there is no history a
regular user can query (``tracejob`` reads the server logs, which normally needs root:
see ``torque/tracejob.permission-denied-logs.stderr.txt``), so the exit file decides.

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


def _torque_jobs(stdout: str) -> Mapping[str, Mapping[str, object]]:
    if "<Job>" not in stdout and "<Data" not in stdout and "Job Id:" in stdout:
        return parse_full_text(stdout)
    return parse_xml_jobs(stdout)


class TorqueDialect(PbsProDialect):
    """Torque 2.x-6.x: PBS Pro's commands (qsub, qdel, qhold, qrls, qselect, version),
    with its own resource syntax, XML status and no queryable history."""

    name = "torque"

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
        return ["qstat", "-x", *native_ids]

    def parse_status(self, stdout: str, stderr: str, exit_status: int) -> dict[str, Observation]:
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
