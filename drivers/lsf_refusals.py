"""LSF's refusal table: how ``bsub``, ``bjobs``, ``bhist`` and ``bkill`` wordings are
classed (transient, permanent, auth), one row per wording with its source and a real
sample. Used by :mod:`schedulerd.drivers.lsf_parse`. Pure data.
"""

from __future__ import annotations

from schedulerd.drivers.refusals import Refusal, RefusalKind, first_match, refusal

_VOLCLAVA = "volclava (openlava fork keeping Platform LSF's tables)"

#: How a refusal of ``bsub`` (or a failed bjobs/bhist/bkill) is classed: the first row
#: whose pattern occurs in the output wins, so the rows go from the most specific to the
#: most general. bsub prints ``[<prefix>: ]<reason>. Job not submitted.`` (cmd.sub.c);
#: the reasons are ``lsb_errmsg[]`` (lsbatch/lib/lsb.err.c) and, after "Failed in an LSF
#: library call: ", the base library's (lsf/lib/lib.err.c), cited by line of the volclava
#: snapshot; IBM-only wordings by the public threads that quote them. bsub exits 255 on a
#: refusal, like ssh, and has been seen to exit 0: the text decides. Unknown text:
#: ``permanent`` when bsub said "Job not submitted" or exited non-zero.
REFUSALS: tuple[Refusal, ...] = (
    # -- our credentials or identity refused: no retry helps ---------------------------------
    refusal(
        r"External authentication failed",
        "auth",
        f"{_VOLCLAVA} lib.err.c l.108 (eauth refused our credential)",
        "Failed in an LSF library call: External authentication failed. Job not submitted.",
    ),
    refusal(
        r"Operation permission denied by LIM|Root user rejected|\bBad user ID\b",
        "auth",
        f"{_VOLCLAVA} lib.err.c l.45, l.60-61",
        "Failed in an LSF library call: Operation permission denied by LIM. Job not submitted.",
    ),
    refusal(
        r"User permission denied|^(?:Failed in an LSF library call: )?Permission denied\b",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.65 (LSBE_PERMISSION), lib.err.c l.62, l.75",
        "User permission denied. Job not submitted.",
    ),
    refusal(
        r"Unknown user|No user is defined in the lsb\.users file|Root job submission is disabled",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.55, l.63-64",
        "Unknown user. Job not submitted.",
    ),
    refusal(
        r"User cannot use the queue",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.70 (LSBE_QUEUE_USE; the queue's USERS list); real in an "
        "ATLAS LAr tool's comment",
        "atlaslarcal: User cannot use the queue. Job not submitted.",
    ),
    refusal(
        r"User not in the specified user group|Bad user group name"
        r"|Invoker is not in specified project group",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.140, l.143, l.160",
        "Invoker is not in specified project group. Job not submitted.",
    ),
    refusal(
        r"Request from (?:a )?non-LSF host rejected",
        "auth",
        f"{_VOLCLAVA} lsb.err.c l.82, lib.err.c l.88: the head is no LSF client host",
        "Request from non-LSF host rejected. Job not submitted.",
    ),
    refusal(
        r"^(?:ssh: )?\S+@\S+: Permission denied \(|^Permission denied \((?:publickey|password)",
        "auth",
        "OpenSSH sshconnect2.c 'Permission denied (%s)': a site's bsub that logs in to a "
        "submit host (exit 255 like ssh)",
        "alice@submit01: Permission denied (publickey,gssapi-with-mic).",
    ),
    # -- passing: limits that clear as jobs finish, a busy or unreachable mbatchd/LIM -------
    refusal(
        r"Pending job (?:slots )?threshold reached",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.191-192 (LSBE_JOB_MAX_PEND, LSBE_SLOTS_MAX_PEND), the "
        "retry loop of cmd.sub.c l.126-143; real in TheRoddyWMS/BatchEuphoria",
        "Group <resUsers>: Pending job threshold reached. Retrying in 60 seconds...",
    ),
    refusal(
        r"has reached its job limit|does not have enough (?:per-\w+ )?job slots"
        r"|No job Id can be used now",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.59, l.78, l.81, l.93, l.120, l.128",
        "The destination queue has reached its job limit. Job not submitted.",
    ),
    refusal(
        r"Queue has been closed",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.68 (LSBE_QUEUE_CLOSED: an administrator closed it, "
        "usually for a while)",
        "normal: Queue has been closed. Job not submitted.",
    ),
    refusal(
        r"Operation is in progress|Communication timeout|Timeout on connect call to server"
        r"|Connection refused by server|Batch protocol error|XDR encode/decode error"
        r"|Master batch daemon internal error|Batch daemon cannot fork|Cannot allocate memory"
        r"|Server is not connected|Unable to contact execution host",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.99-115, l.119",
        "Contacting batch daemon: Communication timeout. Job not submitted.",
    ),
    refusal(
        r"LSF is down|Cannot connect to LSF|batch system daemon not responding"
        r"|LSF daemon \(LIM\) not responding|LIM is (?:down|not responding)"
        r"|Cannot locate master LIM now|LIM configuration is not ready yet"
        r"|Failed in sending/receiving a message|Communication time out|Connection is lost",
        "transient",
        f"{_VOLCLAVA} lsb.comm.c l.527-536, l.618, lib.err.c l.31-124; IBM's 'Cannot connect "
        "to LSF' in DataBiosphere/toil#3097",
        "Failed in an LSF library call: Slave LIM configuration is not ready yet",
    ),
    refusal(
        r"^ssh: (?:connect to host|Could not resolve hostname)|Connection timed out during "
        r"banner exchange|^Connection closed by",
        "transient",
        "OpenSSH's client: a site's bsub that logs in to a submit host could not reach it",
        "ssh: connect to host submit01 port 22: Connection refused",
    ),
    # -- the client's environment is broken (every job meets it; no retry helps) ----------
    refusal(
        r"Unable to open file lsf\.conf|Bad configuration environment"
        r"|Bad syntax in lsf\.conf|Batch service not registered|LSB_SHAREDIR not defined",
        "permanent",
        f"{_VOLCLAVA} lib.err.c l.55-56, l.98, lsb.err.c l.105-106 (profile.lsf not sourced)",
        "Failed in an LSF library call: Unable to open file lsf.conf. Job not submitted.",
    ),
    refusal(
        r"Failed in an LSF library call",
        "transient",
        f"{_VOLCLAVA} lsb.err.c l.102, l.235 (LSBE_LSLIB with another base-library text, "
        "e.g. lib.err.c ls_errmsg[6])",
        "Failed in an LSF library call: LIM protocol error. Job not submitted.",
    ),
    # -- this job can never be taken as it is -------------------------------------------------
    refusal(
        r"No such queue|Queue name must be specified|Queue does not accept EXCLUSIVE jobs",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.54, l.66-67; real in equinor/ert's tests",
        "missingqueue: No such queue. Job not submitted.",
    ),
    refusal(
        r"Bad host name, host group name or cluster name|Host or host group is not used by the "
        r"queue|Bad host specification|Too (?:many|few) processors requested",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.71-72, l.77, l.142, l.184; real in equinor/ert's tests",
        "Too many processors requested. Job not submitted.",
    ),
    refusal(
        r"Bad resource requirement syntax|Bad resource name|No resource defined"
        r"|^Error (?:in|near|with) .*(?:section|select|rusage)"
        r"|Cannot exceed queue's (?:hard limit|resource reservation)",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.89, l.130, l.134-135, l.141; IBM's resource-requirement "
        "parser in equinor/ert's tests and bcbio/bcbio-nextgen#2803",
        "Error in rusage section. Job not submitted.",
    ),
    refusal(
        r"Bad CPU limit specification|Bad time specification"
        r"|Start time is later than termination time|Bad rlimit specification",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.86-88, l.193",
        "Bad time specification. Job not submitted.",
    ),
    refusal(
        r"Dependency condition syntax error|No matching job found|Job array index (?:error|too "
        r"large)|Bad job name|Empty job|No command is specified"
        r"|Interactive job cannot be rerunnable",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.48, l.53, l.90, l.92, l.136, l.152-153, l.195",
        "-J: No matching job found. Job not submitted.",
    ),
    refusal(
        r"Request aborted by esub|Pack submission disabled|illegal option",
        "permanent",
        f"{_VOLCLAVA} lsb.err.c l.144 (LSBE_ESUB_ABORT: the site's esub), cmd.sub.c "
        "l.187-200; real in ExaWorks/psij-python#523",
        "Returning output by mail is not supported on this cluster.\n"
        "Please use the -o option to write output to disk.\n"
        "Request aborted by esub. Job not submitted.",
    ),
)
#: the class of a refusal no row matches
DEFAULT_REFUSAL: RefusalKind = "permanent"


def classify(text: str) -> Refusal | None:
    """The first row of :data:`REFUSALS` whose wording occurs in ``text``."""
    return first_match(REFUSALS, text)
