"""Slurm's refusal table: how ``sbatch`` refusals and failed ``squeue``, ``sacct``,
``scancel``, ``scontrol`` are classed (transient, permanent, auth), one row per wording
with its source and a real sample. Used by :mod:`schedulerd.drivers.slurm`. Pure data.
"""

from __future__ import annotations

from schedulerd.drivers.refusals import Refusal, RefusalKind, first_match, refusal

_POLICY = (
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
    " (job submit limit, user's size and/or time limits)"
)

#: How a refusal (or a failed squeue/sacct/scancel) is classed: the first row whose pattern
#: occurs anywhere in the command's output wins, so the rows go from the most specific to
#: the most general. Sources: the wording's place in Slurm's sources (slurm_errno.c is
#: src/common/slurm_errno.c, ``slurm_errtab[]``; job_state_reason.c the reason names the
#: controller sends before an accounting-policy refusal) and real outputs quoted in public
#: issue threads. Unknown text: ``permanent`` (sbatch said the submission failed and we do
#: not know the reason to be a passing one). sbatch, squeue and sacct exit 1 on every
#: failure, so only the text tells them apart.
REFUSALS: tuple[Refusal, ...] = (
    # -- our credentials (munge) refused: no retry helps --------------------------------------
    refusal(
        r"Protocol authentication error",
        "auth",
        "slurm_errno.c SLURM_PROTOCOL_AUTHENTICATION_ERROR (1007); munged down on the "
        "submit host, real in dun/munge#118, uabrc/uabrc.github.io#1242",
        'sbatch: error: Munge encode failed: Failed to access "/var/run/munge/munge.socket.2":'
        " No such file or directory\n"
        "sbatch: error: authentication: Socket communication error\n"
        "sbatch: error: Batch job submission failed: Protocol authentication error",
    ),
    refusal(
        r"Munge (?:en|de)code failed|auth_g_(?:create|verify)|has authentication error",
        "auth",
        "plugins/auth/munge/auth_munge.c (Munge encode/decode failed), "
        "slurm_protocol_api.c (auth_g_create ... has authentication error); dun/munge#124",
        "sbatch: error: slurm_send_node_msg: auth_g_create: REQUEST_SUBMIT_BATCH_JOB has "
        "authentication error",
    ),
    refusal(
        r"Invalid (?:user |authentication )?credential|Authentication credential expired"
        r"|Cannot unpack credential|Rejecting authentication of user"
        r"|Unable to query kernel for socket peer credential|Token Generation failed",
        "auth",
        "slurm_errno.c ESLURM_AUTH_CRED_INVALID (6000) .. ESLURM_AUTH_* (6011); munge key "
        "mismatch or clock skew (auth_munge.c: 'Check for out of sync clocks')",
        "sbatch: error: Batch job submission failed: Invalid authentication credential",
    ),
    refusal(
        r"Invalid user id|Invalid group id|Unable to resolve user ID to user name",
        "auth",
        "slurm_errno.c ESLURM_USER_ID_MISSING (2010), ESLURM_GROUP_ID_MISSING (2113), "
        "ESLURM_USER_ID_INVALID (2165), ESLURM_USER_ID_UNKNOWN (2166)",
        "sbatch: error: Batch job submission failed: Invalid user id",
    ),
    refusal(
        r"Access/permission denied",
        "auth",
        "slurm_errno.c ESLURM_ACCESS_DENIED (2002) (partition AllowAccounts/AllowGroups/AllowQos)",
        "sbatch: error: Batch job submission failed: Access/permission denied",
    ),
    refusal(
        r"User's group not permitted to use this partition",
        "auth",
        "slurm_errno.c ESLURM_JOB_MISSING_REQUIRED_PARTITION_GROUP (2003)",
        "sbatch: error: Batch job submission failed: User's group not permitted to use this "
        "partition",
    ),
    refusal(
        r"Access denied to requested reservation",
        "auth",
        "slurm_errno.c ESLURM_RESERVATION_ACCESS (2052)",
        "sbatch: error: Batch job submission failed: Access denied to requested reservation",
    ),
    # -- "Job violates accounting/QOS policy": the reason line printed before it decides ------
    refusal(
        r"\b(?:QOS|Assoc)\w*Submit\w*|\bMaxSubmitJobsPerAccount\b|\bQOSUsageThreshold\b",
        "transient",
        "job_state_reason.c (QOSMaxSubmitJobPerUserLimit, QOSGrpSubmitJobsLimit, "
        "AssocMaxSubmitJobLimit, AssocGrpSubmitJobsLimit, MaxSubmitJobsPerAccount): a count "
        "of submitted jobs, it clears as jobs finish; job_mgr.c sends it as err_msg; real "
        "(salloc) in szcf-weiya/techNotes#7, the retry asked for in reframe-hpc/reframe#1595",
        f"sbatch: error: QOSMaxSubmitJobPerUserLimit\n{_POLICY}",
    ),
    refusal(
        r"\b(?:QOS|Assoc)(?:Max\w*Per(?:Job|Node)\w*|Min\w+)|\bPartition(?:Time|Node)Limit\b",
        "permanent",
        "job_state_reason.c (QOSMaxWallDurationPerJobLimit, QOSMaxCpuPerJobLimit, "
        "QOSMaxNodePerJobLimit, QOSMaxMemoryPerJob, QOSMinCpuNotSatisfied, ...): this job "
        "alone exceeds a per-job limit; real (lower-cased by the tool) in BSC-ES/autosubmit#2854",
        f"sbatch: error: QOSMaxWallDurationPerJobLimit\n{_POLICY}",
    ),
    refusal(
        r"\b(?:QOS|Assoc)Grp\w+",
        "permanent",
        "job_state_reason.c (QOSGrpGRES, QOSGrpCpuLimit, ...): at submit the controller "
        "checks the job's own request against the group's cap (acct_policy_validate); real "
        "in VUIIS/dax#504",
        f"sbatch: error: QOSGrpGRES\n{_POLICY}",
    ),
    refusal(
        r"^\S+: error: (?!Batch job submission failed)(?!.*accounting/QOS policy).*\S.*\n"
        r"(?:.*\n)*?.*Job violates accounting/QOS policy",
        "permanent",
        "a job_submit filter's own line before the policy line (job_submit/lua "
        "slurm.user_msg): site policy for this job; real in AMDResearch/hpcfund#45",
        f"sbatch: error:     --> error: requested timelimit exceeds max of 24 hours\n{_POLICY}",
    ),
    refusal(
        r"Job violates accounting/QOS policy",
        "transient",
        "slurm_errno.c ESLURM_ACCOUNTING_POLICY (2050) without a reason line (older "
        "controllers send none): most often the submit-count limit (mlr-org/batchtools#199, "
        "vatlab/sos#898); the scheduler pauses a cluster that keeps refusing",
        _POLICY,
    ),
    # -- passing: limits, a busy or unreachable controller or database -----------------------
    refusal(
        r"MaxJobCount limit reached|Slurm job queue full",
        "transient",
        "slurm_errno.c ESLURM_MAX_JOB_COUNT (2007); sbatch.c 'Slurm job queue full, sleeping "
        "and retrying'",
        "sbatch: error: Slurm job queue full, sleeping and retrying.\n"
        "sbatch: error: Batch job submission failed: MaxJobCount limit reached",
    ),
    refusal(
        r"Unable to contact slurm controller",
        "transient",
        "slurm_errno.c SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR (1800..1803); real in "
        "galaxyproject/pulsar#254, ArjunaCluster/ArjunaUsers#92",
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)",
    ),
    refusal(
        r"Socket timed out on send/recv operation",
        "transient",
        "slurm_errno.c SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT (5004); real in "
        "sdsc/sdsc-summer-institute-2019#55, mlr-org/batchtools#201",
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
    ),
    refusal(
        r"Rate limit exceeded",
        "transient",
        "slurm_errno.c SLURMCTLD_COMMUNICATIONS_BACKOFF (1804) / _HARD_DROP (1805)",
        "sbatch: error: Batch job submission failed: Rate limit exceeded, please retry momentarily",
    ),
    refusal(
        r"in standby mode",
        "transient",
        "slurm_errno.c ESLURM_IN_STANDBY_MODE (2027), ESLURM_IN_STANDBY_USE_BACKUP (2131)",
        "sbatch: error: Batch job submission failed: Slurm backup controller in standby mode",
    ),
    refusal(
        r"System submissions disabled",
        "transient",
        "slurm_errno.c ESLURM_SUBMISSIONS_DISABLED (2105): maintenance",
        "sbatch: error: Batch job submission failed: System submissions disabled",
    ),
    refusal(
        r"can not be altered now, try again later",
        "transient",
        "slurm_errno.c ESLURM_TRANSITION_STATE_NO_UPDATE (2020)",
        "sbatch: error: Batch job submission failed: Job can not be altered now, try again later",
    ),
    refusal(
        r"Communication connection failure|Message send failure|Message receive failure"
        r"|Connection timed out|Process is shutting down and closing all communications"
        r"|Connection refused|Transport endpoint is not connected",
        "transient",
        "slurm_errno.c SLURM_COMMUNICATIONS_* (1001..1025) and the errno texts the "
        "clients print; sacct's slurmdbd lines: sacct/options.c, real in BSC-ES/autosubmit#768",
        "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:dbd01:6819: Connection refused\n"
        "sacct: error: Sending PersistInit msg: Connection refused\n"
        "sacct: error: Problem talking to the database: Connection refused",
    ),
    refusal(
        r"Zero Bytes were transmitted or received",
        "transient",
        "slurm_errno.c SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT (5005): an overloaded "
        "controller; with a munge line beside it the rows above class it auth",
        "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received",
    ),
    refusal(
        r"Unable to connect to database|Problem talking to the database"
        r"|slurmdbd: (?:Unknown error \d+|Operation not permitted)",
        "transient",
        "slurm_errno.c ESLURM_DB_CONNECTION (7000); sacct/options.c; slurmdbd errors that "
        "cleared by themselves in tgen/jetstream#72, jade-hpc-gpu#140",
        "sacct: error: slurmdbd: Unknown error 1021",
    ),
    refusal(
        r"Resource temporarily unavailable|Slurm temporarily unable to accept job",
        "transient",
        "EAGAIN: sbatch.c 'Slurm temporarily unable to accept job, sleeping and retrying'",
        "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
        "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
    ),
    refusal(
        r"slurmctld not responding|slurm controller not responding",
        "transient",
        "kept from this dialect's earlier list of passing wordings (no primary source found)",
        "squeue: error: slurmctld not responding",
    ),
    refusal(
        r"Required partition not available|Partition in DOWN state",
        "transient",
        "slurm_errno.c ESLURM_PARTITION_NOT_AVAIL (2070), ESLURM_PARTITION_DOWN (2101): "
        "an administrator's state",
        "sbatch: error: Batch job submission failed: Required partition not available "
        "(inactive or drain)",
    ),
    refusal(
        r"Required node not available|Requested nodes are busy",
        "transient",
        "slurm_errno.c ESLURM_NODE_NOT_AVAIL (2068), ESLURM_NODES_BUSY (2016)",
        "sbatch: error: Batch job submission failed: Requested nodes are busy",
    ),
    refusal(
        r"Licenses currently unavailable|Requested reservation not usable now"
        r"|breached requested QOS usage threshold",
        "transient",
        "slurm_errno.c ESLURM_LICENSES_UNAVAILABLE (2040), ESLURM_RESERVATION_NOT_USABLE "
        "(2056), ESLURM_QOS_THRES (2074: usage decays)",
        "sbatch: error: Batch job submission failed: Licenses currently unavailable",
    ),
    refusal(
        r"I/O error writing script/environment to file",
        "transient",
        "slurm_errno.c ESLURM_WRITING_TO_FILE (2019): the controller's disk was full in "
        "ArjunaCluster/ArjunaUsers#255",
        "sbatch: error: Batch job submission failed: I/O error writing script/environment to file",
    ),
    # -- this job can never be taken as it is -------------------------------------------------
    refusal(
        r"Invalid partition name specified|invalid partition specified"
        r"|No partition specified or system default partition",
        "permanent",
        "slurm_errno.c ESLURM_INVALID_PARTITION_NAME (2000), "
        "ESLURM_DEFAULT_PARTITION_NOT_SET (2001); fixture sbatch.invalid-partition",
        "sbatch: error: invalid partition specified: abcd\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
    ),
    refusal(
        r"Invalid account or account/partition combination specified"
        r"|Invalid qos specification|Invalid or unknown association|Invalid wckey specification",
        "permanent",
        "slurm_errno.c ESLURM_INVALID_ACCOUNT (2045), ESLURM_INVALID_QOS (2066), "
        "ESLURM_INVALID_ASSOC (2167), ESLURM_INVALID_WCKEY (2057); real in "
        "ArjunaCluster/ArjunaUsers#17, ENCODE-DCC/caper#35",
        "Batch job submission failed: Invalid account or account/partition combination specified",
    ),
    refusal(
        r"Requested time limit is invalid|Time limit specification required",
        "permanent",
        "slurm_errno.c ESLURM_INVALID_TIME_LIMIT (2051), ESLURM_MISSING_TIME_LIMIT (8000)",
        "sbatch: error: Batch job submission failed: Requested time limit is invalid "
        "(missing or exceeds some limit)",
    ),
    refusal(
        r"Requested node configuration is not available"
        r"|Requested partition configuration not available now",
        "permanent",
        "slurm_errno.c ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE (2014), "
        "ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE (2015: the request does not fit the "
        "partition, despite 'now')",
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
    ),
    refusal(
        r"More processors requested than permitted|Node count specification invalid"
        r"|CPU count specification invalid|Memory required by task is not available"
        r"|Invalid generic resource \(gres\) specification"
        r"|Invalid Trackable RESource \(TRES\) specification|Invalid feature specification"
        r"|Invalid job array specification|Task count specification invalid"
        r"|Job size specification needs to be provided",
        "permanent",
        "slurm_errno.c ESLURM_TOO_MANY_REQUESTED_CPUS (2005), _INVALID_NODE_COUNT (2006), "
        "_INVALID_CPU_COUNT (2069), _INVALID_TASK_MEMORY (2044), _INVALID_GRES (2072), "
        "_INVALID_TRES (2115), _INVALID_FEATURE (2029), _INVALID_ARRAY (2081), "
        "_BAD_TASK_COUNT (2025), _JOB_MISSING_SIZE_SPECIFICATION (2008)",
        "sbatch: error: Batch job submission failed: Memory required by task is not available",
    ),
    refusal(
        r"Job dependency problem|Circular job dependency|Requested reservation is invalid"
        r"|Invalid license specification",
        "permanent",
        "slurm_errno.c ESLURM_DEPENDENCY (2038), ESLURM_CIRCULAR_DEPENDENCY (2071), "
        "ESLURM_RESERVATION_INVALID (2053), ESLURM_INVALID_LICENSES (2048)",
        "sbatch: error: Batch job submission failed: Job dependency problem",
    ),
    refusal(
        r"without the current working directory specified"
        r"|Pathname of a file, directory or other parameter too long"
        r"|Incompatible versions of client and server code",
        "permanent",
        "slurm_errno.c ESLURM_MISSING_WORK_DIR (2063), ESLURM_PATHNAME_TOO_LONG (2012), "
        "SLURM_PROTOCOL_VERSION_ERROR (1005)",
        "sbatch: error: Batch job submission failed: Incompatible versions of client and "
        "server code",
    ),
)
#: the class of a refusal no row matches
DEFAULT_REFUSAL: RefusalKind = "permanent"


def classify(text: str) -> Refusal | None:
    """The first row of :data:`REFUSALS` whose wording occurs in ``text``."""
    return first_match(REFUSALS, text)


def refusal_kind(text: str, default: RefusalKind = DEFAULT_REFUSAL) -> RefusalKind:
    row = classify(text)
    return default if row is None else row.kind
