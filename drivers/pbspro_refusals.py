"""PBS Professional / OpenPBS refusal table: how ``qsub`` refusals and failed ``qstat``,
``qdel``, ``qselect`` are classed (transient, permanent, auth), one row per wording with
its source and a real sample. Torque's own table is ``torque.REFUSALS``; the parsers of
:mod:`schedulerd.drivers.pbs_parse` take either. Pure data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from schedulerd.drivers.refusals import Refusal, first_match, refusal

#: How PBS Pro / OpenPBS wordings are classed, for ``qsub`` refusals and for failed
#: ``qstat``/``qdel``/``qselect``: the first row whose pattern occurs anywhere in the
#: command's stderr wins, so the rows go from the most specific to the most general (the
#: credential rows come before the "cannot connect" rows that follow them in the same
#: output). The server's texts are ``pbs_messages.c`` (src/lib/Liblog/pbs_messages.c,
#: ``pbs_err_to_txt[]``; ``msg_*`` names below); ``qsub`` prints them as ``qsub: <text>``
#: and exits with the PBSE code & 0xff (exit codes wrap and differ from Torque's, so only
#: the text is used). Unknown ``qsub: ...`` text is ``permanent`` (qsub said it did not
#: submit, for a reason we do not know to be passing); output without a ``qsub:`` line and
#: without a known wording (a shell error, a wrapper's text) is not a refusal at all: the
#: driver looks the job up by name (``ParseError``).
REFUSALS: Final[tuple[Refusal, ...]] = (
    # -- our credentials refused (authentication, authorisation): no retry helps ----------
    refusal(
        r"MUNGE user-authentication on (?:en|de)code failed|User credentials do not match",
        "auth",
        "src/lib/Libauth/munge/munge_supp.c (munge_get_auth_data / munge_validate_auth_data);"
        " the client's lines when munged is not running, as asserted by OpenPBS's "
        "test/tests/security/pbs_multiple_auth.py (test_munge_not_running_state); the same "
        "class as the Slurm dialect's munge rows",
        "munge_get_auth_data: MUNGE user-authentication on encode failed with "
        "`Munged communication error`\n"
        "auth: error returned: 15010\n"
        "auth: MUNGE user-authentication on encode failed with `Munged communication error`\n"
        "qsub: cannot connect to server pbsserver (errno=15010)",
    ),
    refusal(
        r"auth: Unable to authenticate connection"
        r"|auth: Failed to send auth request|auth: error returned: 15029",
        "auth",
        "src/lib/Libauth (the client's auth lines): the server does not take our "
        "PBS_AUTH_METHOD (PBSE_NOSUP 15029) or refuses the connection's authentication; "
        "pbs_multiple_auth.py (test_not_listed_auth_method and the resvport/munge mix test)",
        "auth: error returned: 15029\n"
        "auth: Failed to send auth request\n"
        "No support for requested service.\n"
        "qsub: cannot connect to server pbsserver (errno=15029)",
    ),
    refusal(
        r"Unauthorized Request",
        "auth",
        "msg_perm 'Unauthorized Request ' (PBSE_PERM 15007, exit 159): svr_chkque "
        "(src/server/svr_jobfunc.c) returns it when a queue's user or group ACL refuses us",
        "qsub: Unauthorized Request ",
    ),
    refusal(
        r"Access from host not allowed, or unknown host",
        "auth",
        "msg_reqbadhost (PBSE_BADHOST 15008): the queue's host ACL refuses the submit host "
        "(svr_jobfunc.c; test/tests/functional/pbs_acl_host_queue.py)",
        "qsub: Access from host not allowed, or unknown host",
    ),
    refusal(
        r"Bad [UG]ID for job execution",
        "auth",
        "msg_baduser / msg_badgrp (PBSE_BADUSER 15023, exit 175; PBSE_BADGRP 15045): the "
        "server will not run jobs as our user or group (unknown there, or not allowed)",
        "qsub: Bad UID for job execution",
    ),
    refusal(
        r"Expired credential",
        "auth",
        "msg_expired (PBSE_EXPIRED 15020): our credential (Kerberos ticket, ...) expired; "
        "someone must renew it",
        "qsub: Expired credential",
    ),
    refusal(
        r"^No Permission\.$",
        "auth",
        "src/lib/Libcmds/cnt2server.c: the connection itself was refused for permission "
        "(PBSE_PERM)",
        "No Permission.\nqsub: cannot connect to server pbsserver (errno=15007)",
    ),
    # -- passing: limits on what is queued, a busy or unreachable server ------------------
    refusal(
        r"Invalid credential",
        "transient",
        "msg_badcred (PBSE_BADCRED 15019, exit 171): the server could not check the "
        "connection's credential; seen passing under load (resubmitting worked) in real "
        "outputs: equinor/ert#7103 ('qsub: Invalid credential', exit 171, retried by ert), "
        "tudo-r/BatchJobs#122 (Torque)",
        "qsub: Invalid credential",
    ),
    refusal(
        r"Maximum number of jobs in 'Q' state (?:for (?:user|group|project) \S+ )?"
        r"already in (?:queue|complex)",
        "transient",
        "msg_et_qct_q / msg_et_sct_q / msg_et_suq_q / msg_et_sus_q (and the group and "
        "project variants): a queued_jobs_threshold limit (PBSE_ENTLIMCT 15142, exit 38); "
        "server/svr_func.c builds the text; test/tests/functional/pbs_test_entity_limits.py",
        "qsub: Maximum number of jobs in 'Q' state for user alice already in queue workq",
    ),
    refusal(
        r"Maximum number of jobs (?:for (?:user|group|project) \S+ )?"
        r"already in (?:queue|complex)",
        "transient",
        "msg_maxqueued (PBSE_MAXQUED 15046) and msg_et_qct / msg_et_sct / msg_et_suq / "
        "msg_et_sus (and the group and project variants): a max_queued limit on jobs "
        "queued or running (PBSE_ENTLIMCT); pbs_test_entity_limits.py",
        "qsub: Maximum number of jobs for user alice already in queue workq",
    ),
    refusal(
        r"would exceed (?:queue \S+'s|complex's) per-(?:user|group|project) limit",
        "transient",
        "msg_et_guq / msg_et_gus / msg_et_ggq / ... and their 'of jobs in 'Q' state' "
        "variants: a generic (PBS_GENERIC) max_queued or queued_jobs_threshold limit; "
        "pbs_test_entity_limits.py; real on ALCF Polaris (tests/fixtures "
        "pbspro/qsub.would-exceed-queue-generic-per-user-limit.stderr.txt)",
        "qsub: would exceed queue generic's per-user limit of jobs in 'Q' state",
    ),
    refusal(
        r"would exceed (?:per-(?:user|group|project) |(?:user|group|project) \S+'s )?"
        r"limit on resource",
        "transient",
        "msg_et_raq / msg_et_ras / msg_et_rguq / msg_et_rsuq / ... (PBSE_ENTLIMRESC 15143): a "
        "max_queued_res or queued_jobs_threshold_res limit on what is queued; passes as "
        "our other jobs finish (the same wording is used when this job alone is over the "
        "limit: we cannot tell, the scheduler's refusal pause paces the retries)",
        "qsub: would exceed per-user limit on resource ncpus in complex",
    ),
    refusal(
        r"Request not allowed: Server shutting down",
        "transient",
        "msg_svrshut (PBSE_SVRDOWN 15060)",
        "qsub: Request not allowed: Server shutting down",
    ),
    refusal(
        r"Server connection table full|No free connections|^Too many open connections\.$",
        "transient",
        "msg_connfull (PBSE_CONNFULL 15117), msg_noconnects (PBSE_NOCONNECTS 15033), "
        "cnt2server.c 'Too many open connections.'",
        "qsub: Server connection table full",
    ),
    refusal(
        r"Resource temporarily unavailable",
        "transient",
        "msg_rescunav (PBSE_RESCUNAV 15044)",
        "qsub: Resource temporarily unavailable",
    ),
    refusal(
        r"Failed to save job/resv",
        "transient",
        "msg_save_err (PBSE_SAVE_ERR 15161, exit 57): the server's database; "
        "test/tests/functional/pbs_qsub_opts_args.py, openpbs/openpbs#1104",
        "qsub: Failed to save job/resv, refer server logs for details",
    ),
    refusal(
        r"Batch protocol error|Premature end of message|End of File",
        "transient",
        "msg_protocol (PBSE_PROTOCOL 15031, exit 183) and the DIS texts of "
        "src/lib/Libdis/dis.c (dis_emsg[]); real 'qsub: Premature end of message' (exit "
        "183) in equinor/ert#7103",
        "qsub: Premature end of message",
    ),
    refusal(
        r"PBS server internal error|System error",
        "transient",
        "msg_internal (PBSE_INTERNAL 15011), msg_system 'System error: ' (PBSE_SYSTEM "
        "15010): the server failed, not this job",
        "qsub: PBS server internal error",
    ),
    refusal(
        r"Queue is not enabled",
        "transient",
        "msg_qunoenb (PBSE_QUNOENB 15021): svr_chkque refuses while the queue's 'enabled' "
        "is false, which admins set for maintenance",
        "qsub: Queue is not enabled",
    ),
    refusal(
        r"request rejected as filter hook '[^']*' got an alarm call",
        "transient",
        "src/server/hook_func.c: a site's queuejob hook ran out of time (server load)",
        "qsub: request rejected as filter hook 'site_check' got an alarm call. Please inform Admin",
    ),
    refusal(
        r"cannot connect to server|Connection refused|No route to host|Connection timed out"
        r"|Network is unreachable|Communication failure|pbs_iff: cannot",
        "transient",
        "src/cmds/qsub.c 'qsub: cannot connect to server <s> (errno=<n>)' after a "
        "cnt2server.c or perror() line; real in openpbs/openpbs#2070 and equinor/ert#7103 "
        "(exit 162), tests/fixtures pbspro/qstat-x-f-F-JSON.cannot-connect.*",
        "Connection refused\nqsub: cannot connect to server s034-lc (errno=15010)",
    ),
    # -- permanent: this job can never be taken as it is -----------------------------------
    refusal(
        r"Job violates queue and/or server resource limits|Resource limit exceeds allowable"
        r"|Array job exceeds server or queue size limit",
        "permanent",
        "msg_excqresc (PBSE_EXCQRESC 15036, exit 188), msg_exceedlmt (PBSE_EXLIMIT), "
        "msg_maxarraysize: the job's own request is beyond the queue's resources_max (or "
        "below resources_min); no amount of waiting changes it",
        "qsub: Job violates queue and/or server resource limits",
    ),
    refusal(
        r"Unknown queue|No default queue specified|Access to queue is denied"
        r"|Job rejected by all possible destinations",
        "permanent",
        "msg_unkque (PBSE_UNKQUE), msg_quenodflt, msg_qacess (PBSE_QACESS: svr_chkque "
        "returns it for a from_route_only queue, so it is about the queue we asked for, "
        "not our credentials), msg_routebad (PBSE_ROUTEREJ); real 'qsub: Unknown queue' "
        "(tests/fixtures pbspro/qsub.unknown-queue.stderr.txt)",
        "qsub: Unknown queue",
    ),
    refusal(
        r"Unknown resource|Illegal attribute or resource value|illegal -\w value"
        r"|Resource invalid in \"select\" specification|node\(s\) specification error"
        r"|Cannot have \"place\" without \"select\"|Invalid Account|Invalid Job Dependency"
        r"|jobscript size exceeded|hook rejected request",
        "permanent",
        "msg_unkresc, msg_badatval, qsub.c 'illegal -<opt> value', msg_invalselectresc, "
        "msg_BadNodespec, msg_placenoselect, msg_badacct, msg_baddepend, "
        "msg_jobscript_max_size, msg_hook_reject: what this job asks for",
        "qsub: Illegal attribute or resource value",
    ),
)


def classify(text: str, table: Sequence[Refusal] = REFUSALS) -> Refusal | None:
    """The first row of ``table`` whose wording occurs in ``text``."""
    return first_match(table, text)
