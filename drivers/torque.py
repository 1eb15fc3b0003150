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
from schedulerd.drivers.pbs_parse import (
    NATIVE_ID,
    parse_full_text,
    parse_qstat_common,
    raise_for_head_error,
)
from schedulerd.drivers.pbspro import PbsProDialect, common_directives, positive
from schedulerd.drivers.refusals import Refusal, refusal
from schedulerd.errors import ParseError

#: TORQUE Administrator Guide, qstat(1B) "job_state" / Appendix "Job States": the state
#: letters (the server's are "TQHWREC", src/server/svr_jobfunc.c; S is qstat(1B)'s
#: suspended, also printed by Slurm's qstat wrapper, whose U is handled by
#: ``_decided_by_queue``). Torque has no B/F/M/X: arrays are ``-t`` jobs whose elements
#: ``123[4].server`` carry ordinary states. ``None``: completed, decide from exit_status.
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

#: How Torque wordings are classed, for ``qsub`` refusals and failed ``qstat``/``qdel``
#: (first match wins; see ``pbspro_refusals.REFUSALS`` for the shape). The texts are Torque's
#: ``pbs_error_db.h`` (src/include/pbs_error_db.h, numbered from 15000 by position, so the
#: codes differ from OpenPBS's: Torque inserted 15008/15009). Torque >= 4.1 prints a
#: refusal as ``qsub: submit error (<text>[ MSG=<detail>])`` (src/cmds/qsub_functions.c;
#: the server's req_reject adds the detail), Torque 2.5 as ``qsub: <text> MSG=<detail>``;
#: the rows key on ``<text>``. Unknown ``qsub:`` text is ``permanent``; output with no
#: ``qsub:`` line and no known wording is not understood (``ParseError``: the driver looks
#: the job up by name).
REFUSALS: Final[tuple[Refusal, ...]] = (
    # -- our credentials refused (authentication, authorisation): no retry helps ----------
    refusal(
        r"munge executable not found, unable to authenticate|Invalid auth type in request"
        r"|client is not allowed/trusted|Expired credential",
        "auth",
        "PBSE_MUNGE_NOT_FOUND 15009, PBSE_AUTH_INVALID, PBSE_CLIENT_INVALID, PBSE_EXPIRED "
        "15022: the server cannot or will not authenticate us as configured; printed by "
        "qsub_functions.c as 'qsub: cannot connect to server <s> (errno=<n>) <text>'",
        "qsub: cannot connect to server torque-head (errno=15009) munge executable not found,"
        " unable to authenticate",
    ),
    refusal(
        r"Unauthorized Request|^No Permission\.$",
        "auth",
        "PBSE_PERM 15007 'Unauthorized Request ' (exit 159): the queue's user, group or host "
        "ACL refuses us (src/server/svr_jobfunc.c 'user ACL rejected the submitting user', "
        "req_quejob.c 'job request not authorized'), or the connection itself "
        "(src/lib/Libcmds/cnt2server.c 'No Permission.'); real in tests/fixtures "
        "torque/qsub.unauthorized-queue-acl.stderr.txt",
        "qsub: Unauthorized Request  MSG=user ACL rejected the submitting user: user "
        "amessina@argo.ictp.it, queue cm1",
    ),
    refusal(
        r"Bad [UG]ID for job execution|Access from host not allowed, or unknown host",
        "auth",
        "PBSE_BADUSER 15025 (exit 177), PBSE_BADGRP, PBSE_BADHOST: the server does not "
        "accept our user from this host (ruserok, no account there); real in "
        "marbl/canu#104",
        "qsub: submit error (Bad UID for job execution MSG=ruserok failed validating "
        "scbbcluster/scbbcluster from r3node4)",
    ),
    # -- passing: limits on what is queued, a busy or unreachable server ------------------
    refusal(
        r"could not connect to trqauthd|socket_connect_unix failed",
        "transient",
        "PBSE_DOMAIN_SOCKET_FAULT 15137: the login node's trqauthd cannot be reached; real "
        "in kftsehk/phy-clusters#25 and #35 (went away by itself, and once the head's full "
        "partition was cleaned up), adaptivecomputing/torque#380, aidenlab/juicer#105; the "
        "polls meet it too, so the cluster is shown degraded while it lasts",
        "socket_connect_unix failed: 15137\n"
        "qsub: cannot connect to server (null) (errno=15137) could not connect to trqauthd",
    ),
    refusal(
        r"Client connection not found\. trqauthd unable to authorize user",
        "transient",
        "PBSE_CLIENT_CONN_NOT_FOUND 15135: the text itself says 'Possible transient failure."
        " Please try again'",
        "qsub: submit error (Client connection not found. trqauthd unable to authorize user."
        " Possible transient failure. Please try again)",
    ),
    refusal(
        r"trqauthd unable to authenticate|^Unable to authorize user\.$",
        "transient",
        "PBSE_IFF_NOT_FOUND 15008 (cnt2server.c adds 'Unable to authorize user.'): trqauthd "
        "could not look our user up; real in kftsehk/phy-clusters#34, where it came and "
        "went by itself for 30-60 s at a time (getpwuid failing)",
        "parse_daemon_response error 15008 trqauthd unable to authenticate. User or PID of "
        "calling process not found or does not match\n"
        "Unable to communicate with cluster(10.1.1.1)\n"
        "Unable to authorize user.\n"
        "qsub: cannot connect to server cluster (errno=15008) trqauthd unable to "
        "authenticate. User or PID of calling process not found or does not match",
    ),
    refusal(
        r"Invalid credential",
        "transient",
        "PBSE_BADCRED 15021 (exit 173): seen passing when many jobs are submitted at once "
        "(resubmitting worked), real in tudo-r/BatchJobs#122",
        "qsub: Invalid credential",
    ),
    refusal(
        r"Maximum number of jobs already in queue for user",
        "transient",
        "PBSE_MAXUSERQUED 15076 (exit 228): the queue's max_user_queuable "
        "(svr_jobfunc.c 'total number of current user's jobs exceeds the queue limit'); "
        "real in marbl/canu#73",
        "qsub: submit error (Maximum number of jobs already in queue for user MSG=total "
        "number of current user's jobs exceeds the queue limit: user aviantask@hpc2187, "
        "queue cegs)",
    ),
    refusal(
        r"Maximum number of jobs already in queue",
        "transient",
        "PBSE_MAXQUED 15048 (exit 200): the queue's max_queuable (svr_jobfunc.c 'total "
        "number of jobs in queue exceeds the queue limit') or the server's "
        "max_user_queuable (req_quejob.c 'violates the global server limit'); real in "
        "marbl/canu#672",
        "qsub: submit error (Maximum number of jobs already in queue MSG=Job "
        "3382993.dedicated-sched.pace.gatech.edu violates the global server limit of 3000 "
        "jobs queued per user)",
    ),
    refusal(
        r"too busy to service this request|Please retry this request",
        "transient",
        "PBSE_SERVER_BUSY 15134",
        "qsub: submit error (Pbs Server is currently too busy to service this request. "
        "Please retry this request.)",
    ),
    refusal(
        r"Request not allowed: Server shutting down|Queue is currently not available"
        r"|This queue had errors during its recovery|Queue is not enabled",
        "transient",
        "PBSE_SVRDOWN, PBSE_QUENOTAVAILABLE, PBSE_GHOSTQUEUE, PBSE_QUNOENB (svr_jobfunc.c "
        "'queue is disabled'): the server or the queue is out of service for a while",
        "qsub: submit error (Queue is not enabled MSG=queue is disabled: user "
        "alice@login1, queue batch)",
    ),
    refusal(
        r"Batch protocol error|Bad DIS based Request Protocol|Premature End of File"
        r"|End of File|\bTime out\b|Connection to server timed out",
        "transient",
        "PBSE_PROTOCOL, PBSE_DISPROTO, PBSE_PREMATURE_EOF, PBSE_EOF, PBSE_TIMEOUT 15085; "
        "qsub_functions.c 'Connection to server timed out. Trying again'",
        "qsub: submit error (Premature End of File)",
    ),
    refusal(
        r"PBS server internal error|System error|Error allocating memory",
        "transient",
        "PBSE_INTERNAL, PBSE_SYSTEM ' System error: ', PBSE_MEM_MALLOC: the server failed, "
        "not this job",
        "qsub: submit error (PBS server internal error)",
    ),
    refusal(
        r"cannot connect to server|Cannot connect to (?:default|specified) server host"
        r"|Unable to communicate with|Could not connect to batch server|Connection refused"
        r"|No route to host|Connection timed out|Network is unreachable"
        r"|Communication failure",
        "transient",
        "qsub_functions.c 'qsub: cannot connect to server <s> (errno=<n>) <text>' after "
        "cnt2server.c's lines (qstat alike); real in cBio/cbio-cluster#178 and #28, "
        "pcingola/BigDataScript#32",
        "Unable to communicate with mskcc-fe1.local(10.240.16.1)\n"
        "Cannot connect to default server host 'mskcc-fe1.local' - check pbs_server daemon "
        "and/or trqauthd.\n"
        "qstat: cannot connect to server mskcc-fe1.local (errno=111) Connection refused",
    ),
    # -- permanent: this job can never be taken as it is -----------------------------------
    refusal(
        r"Job exceeds queue resource limits|Resource limit exceeds allowable"
        r"|Request doesn't meet minimum limit|resource request conflicts with the queue",
        "permanent",
        "PBSE_EXCQRESC 15038 (exit 190; svr_jobfunc.c 'cannot satisfy queue max <r> "
        "requirement', 'cannot locate feasible nodes'), PBSE_EXLIMIT, PBSE_MINLIMIT, "
        "PBSE_RESC_CONFLICT: the job's own request; real in cBio/cbio-cluster#93, "
        "tests/fixtures torque/qsub.exceeds-queue-resource-limits.stderr.txt",
        "qsub: submit error (Job exceeds queue resource limits MSG=cannot satisfy queue max "
        "mem requirement)",
    ),
    refusal(
        r"Unknown queue|No default queue specified|Access to queue is denied"
        r"|Queue does not allow|Job rejected by all possible destinations",
        "permanent",
        "PBSE_UNKQUE (req_quejob.c 'requested queue not found'), PBSE_QUENODFLT, PBSE_QACESS "
        "(svr_jobfunc.c 'queue accepts only routed jobs, no direct submission'), "
        "PBSE_NOBATCH.., PBSE_ROUTEREJ: the queue we asked for",
        "qsub: submit error (Unknown queue MSG=requested queue not found)",
    ),
    refusal(
        r"Unknown resource type|Illegal attribute or resource value|Invalid Account"
        r"|Invalid Job Dependency|Bad Job Array Request",
        "permanent",
        "PBSE_UNKRESC, PBSE_BADATVAL, PBSE_BADACCT (req_quejob.c 'invalid account'), "
        "PBSE_BADDEPEND, PBSE_BAD_ARRAY_REQ: what this job asks for",
        "qsub: submit error (Invalid Account MSG=invalid account)",
    ),
)

#: Torque's JOB_EXEC_OVERLIMIT_WT (``pbs_job.h``): killed for exceeding its walltime.
TORQUE_WALLTIME_EXIT: Final = -11

_DOCUMENT: Final = re.compile(r"<Data\s*/>|<Data>(.*?)</Data>", re.DOTALL)
_JOB: Final = re.compile(r"<Job>(.*?)</Job>", re.DOTALL)
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
    """The ``<Job>`` records of ``qstat -x`` output: one or more whole ``<Data>``
    documents, possibly after banner lines and the XML declaration, keyed by ``Job_Id``.
    Anything else (no ``<Data>``, a cut-off document, text after it, a ``<Job>`` without
    an id) is not understood: jobs missing from it would read as gone from the queue."""
    start = text.find("<Data")
    if start < 0:
        if not text.strip():
            return {}
        raise ParseError(f"no <Data> in qstat -x output: {text.strip()[:200]!r}")
    body = text[start:]
    documents = list(_DOCUMENT.finditer(body))
    rest = _DOCUMENT.sub("", body)
    if not documents or rest.strip():
        raise ParseError(f"qstat -x output is not whole <Data> documents: {body[:200]!r}")
    jobs: dict[str, dict[str, object]] = {}
    for document in documents:
        inner = document.group(1) or ""
        records = list(_JOB.finditer(inner))
        if _JOB.sub("", inner).strip():
            raise ParseError(f"qstat -x: <Data> holds more than <Job> records: {inner[:200]!r}")
        for record in records:
            fields = record.group(1)
            attrs: dict[str, object] = {}
            for tag, pattern in _ELEMENT.items():
                match = pattern.search(fields)
                if match:
                    attrs[tag] = html.unescape(match.group(1)).strip()
            native_id = attrs.pop("Job_Id", None)
            if not isinstance(native_id, str) or not NATIVE_ID.fullmatch(native_id):
                raise ParseError(f"qstat -x: a <Job> without a job id: {fields[:200]!r}")
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


#: Slurm's Torque-compatible ``qstat`` (contribs/torque/qstat.pl, ``stateCode``) prints
#: ``U`` for a Slurm state it has no letter for; every such base state (DEADLINE,
#: OUT_OF_MEMORY, and in older versions NODE_FAIL, PREEMPTED, BOOT_FAIL) is final.
SLURM_WRAPPER_UNKNOWN: Final = "U"


def _decided_by_queue(attrs: Mapping[str, object]) -> bool:
    """False for a job the exit file decides: ``C`` without ``exit_status`` (it ran and
    failed, or was deleted before it ran: the queue cannot tell) and Slurm's wrapper's
    ``U`` (ended in a state the wrapper has no letter for)."""
    state = attrs.get("job_state")
    letter = state.strip() if isinstance(state, str) else None
    if letter == SLURM_WRAPPER_UNKNOWN:
        return False
    if letter == "C":
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
    raise_for_head_error("qstat", stderr, exit_status, REFUSALS)
    return True


class TorqueDialect(PbsProDialect):
    """Torque 2.x-6.x: PBS Pro's commands (qsub, qdel, qhold, qrls, qselect, version),
    with its own resource syntax, XML status and no queryable history. With
    ``xml=False`` (a head whose ``qstat`` has no ``-x``) status is ``qstat -f`` text."""

    name = "torque"
    refusals = REFUSALS

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
            table=self.refusals,
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
