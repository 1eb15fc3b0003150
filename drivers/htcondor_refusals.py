"""HTCondor's refusal table: how ``condor_submit`` refusals and the head errors of
``condor_q``, ``condor_history``, ``condor_rm``/``hold``/``release`` are classed
(transient, permanent, auth), one row per wording with its source and a real sample.
Used by :mod:`schedulerd.drivers.htcondor`. Pure data.
"""

from __future__ import annotations

from schedulerd.drivers.refusals import Refusal, first_match, refusal

#: How HTCondor's refusals read: condor_submit, and the head errors of condor_q,
#: condor_history, condor_rm/hold/release. FIRST MATCH WINS over the whole output, so the
#: most specific rows come first: an authentication line anywhere in the error stack
#: makes the answer ``auth`` even when "Failed to connect to queue manager" (transient
#: alone) heads it; a schedd limit is transient, a per-submission cap permanent.
#: condor_submit prints ``ERROR: <what>`` and then the error stack, one
#: ``SUBSYS:CODE:message`` frame a line (CondorError::getFullText(true)); codes from
#: src/condor_includes/condor_error_codes.h. A refusal no row matches is permanent
#: (condor_submit exits 1 with an ``ERROR:`` line: the job was not submitted); a failed
#: query or job action no row matches is a permanent RemoteCommandError. Sources are
#: htcondor/htcondor @7491a145f6 unless noted; a sample is a capture or the source's
#: format string filled in.
REFUSALS: tuple[Refusal, ...] = (
    # --- our credentials: authentication and authorisation (no retry can fix them) ---
    refusal(
        r"\bSECMAN:20(?:08|09|10):",
        "auth",
        "src/condor_io/condor_secman.cpp l.2306, l.2518 (2010 AUTHORIZATION_FAILED), l.1236"
        " (2009 CLIENT_AUTH_FAILED); sample: htcondor/htcondor PR #125",
        "ERROR: Failed to connect to local queue manager\n"
        'SECMAN:2010:Received "DENIED" from server for user build@07a87ab21a6b using method FS.',
    ),
    refusal(
        r"\bAUTHENTICATE:1003:",
        "auth",
        "src/condor_io/authentication.cpp l.332 (OUT_OF_METHODS); sample: DIRACGrid/DIRAC"
        " issue #8048 (condor_submit -terse -remote to an HTCondor-CE, SciTokens refused)",
        "ERROR: Failed to connect to queue manager ce504.cern.ch\n"
        "AUTHENTICATE:1003:Failed to authenticate with any method\n"
        "AUTHENTICATE:1004:Failed to authenticate using SCITOKENS",
    ),
    refusal(
        # handshake = the exchange of method lists; it fails when the socket does
        r"\bAUTHENTICATE:1002:",
        "transient",
        "src/condor_io/authentication.cpp l.242 (HANDSHAKE_FAILED, after a failed read/write)",
        "ERROR: Failed to connect to local queue manager\n"
        "AUTHENTICATE:1002:Failure performing handshake",
    ),
    refusal(
        # the deadline ran out while methods were left to try (1003 comes first when none)
        r"\bAUTHENTICATE:1006:",
        "transient",
        "src/condor_io/authentication.cpp l.223, l.376 (TIMEOUT); sample: cms-sw/genproductions"
        " issue #1177 (lxplus)",
        "ERROR: Failed to connect to local queue manager\n"
        "AUTHENTICATE:1006:exceeded 1506425125 deadline during authentication",
    ),
    refusal(
        r"\bAUTHENTICATE:100\d:",
        "auth",
        "src/condor_io/authentication.cpp l.400, l.410 (1004 METHOD_FAILED), 1001/1005/1007"
        " (NOT_BUILT/KEYEXCHANGE/PLUGIN); sample: DIRACGrid/DIRAC issue #8048",
        "AUTHENTICATE:1004:Failed to authenticate using SCITOKENS",
    ),
    refusal(
        r"\bSCITOKENS:\d+:",
        "auth",
        "src/condor_utils/condor_scitokens.cpp l.270-361",
        "SCITOKENS:2:Failed to verify token and generate ACLs: token expired",
    ),
    refusal(
        r"\bTOKEN:\d+:",
        "auth",
        "src/condor_utils/store_cred.cpp l.2639, l.2704 (IDTOKENS files)",
        "TOKEN:1:Failed to read file /home/alice/.condor/tokens.d/ap.token securely.",
    ),
    refusal(
        r"\bGSI:\d+:",
        "auth",
        "usegalaxy-eu/infrastructure-playbook PR #855 (condor_rm -name, fixture"
        " condor_rm.auth-failure-remote-schedd.txt)",
        "GSI:5003:Failed to authenticate.  Globus is reporting error (851968:50).  There is"
        " probably a problem with your credentials.  (Did you run grid-proxy-init?)",
    ),
    refusal(
        r"\bPermission denied to (?:remove|force removal of|transfer and remove|hold|release)"
        r" job \d+\.\d+",
        "auth",
        "src/condor_daemon_client/dc_schedd.cpp l.1630 (AR_PERMISSION_DENIED)",
        "Permission denied to remove job 123.4",
    ),
    refusal(
        r"\bUnknown User \S+\. Use condor_qusers\b",
        "auth",
        "src/condor_schedd.V6/qmgmt.cpp l.3815",
        "ERROR: Unknown User alice@ap1.example.org. Use condor_qusers to add user before"
        " submitting jobs.\nUser is disabled",
    ),
    refusal(
        r"\bUser (?:\S+ )?is disabled\b",
        "auth",
        "src/condor_schedd.V6/qmgmt.cpp l.3847-3849; src/condor_submit.V6/submit.cpp l.2228",
        "ERROR: User alice@ap1.example.org is disabled\nUser is disabled",
    ),
    refusal(
        r"\bThe given user is not allowed to own jobs\b",
        "auth",
        "src/condor_submit.V6/submit.cpp l.2230 (NEWJOB_ERR_DISALLOWED_USER)",
        "ERROR: Failed to create new User record for alice.\n"
        "The given user is not allowed to own jobs",
    ),
    refusal(
        r"\bNo credential stored for\b",
        "auth",
        "src/condor_submit.V6/submit.cpp l.836",
        "ERROR: No credential stored for alice@EXAMPLE\n\n\tCorrect this by running:\n"
        "\tcondor_store_cred add",
    ),
    # --- caps that the same job meets again (before the limits: same "would exceed") ---
    refusal(
        r"\bwould exceed MAX_JOBS_PER_SUBMISSION\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2301-2303; qmgmt.cpp l.3969 (a cap per submit: a"
        " one-job submit refused by it is refused every time)",
        "ERROR: Failed to create proc\n"
        "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION",
    ),
    refusal(
        r"\bwould exceed -maxjobs\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2286",
        "ERROR: Number of submitted jobs would exceed -maxjobs (0)",
    ),
    refusal(
        r"\bNumber of submitted clusters would exceed \d+ and -single-cluster\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2211",
        "ERROR: Number of submitted clusters would exceed 1 and -single-cluster was specified",
    ),
    refusal(
        r"\bSUBMIT_MAX_PROCS_IN_CLUSTER\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.2310",
        "ERROR: number of procs exceeds SUBMIT_MAX_PROCS_IN_CLUSTER",
    ),
    # --- the schedd's limits on jobs in the queue: they pass as jobs leave ---
    refusal(
        r"\bMAX_JOBS_SUBMITTED\b",
        "transient",
        "src/condor_schedd.V6/qmgmt.cpp l.3791 (NewCluster), l.3920 (NewProc);"
        " src/condor_submit.V6/submit.cpp l.2219-2222, l.2294-2297",
        "ERROR: MAX_JOBS_SUBMITTED exceeded. Current=10000, Limit=10000\n"
        "Number of submitted jobs would exceed MAX_JOBS_SUBMITTED",
    ),
    refusal(
        r"\bMAX_JOBS_PER_OWNER\b",
        "transient",
        "src/condor_schedd.V6/qmgmt.cpp l.3957 (NewProc); src/condor_submit.V6/submit.cpp"
        " l.2298-2300",
        "ERROR: Failed to create proc\nNumber of submitted jobs would exceed MAX_JOBS_PER_OWNER",
    ),
    # --- the site's policy on the job itself ---
    refusal(
        r"\bSubmit requirement \S+ (?:not met|evaluated to non-boolean|failed to evaluate)",
        "permanent",
        "src/condor_schedd.V6/schedd.cpp l.21020-21056 (checkSubmitRequirements)",
        "ERROR: Failed to commit job submission into the queue.\n"
        "ERROR: Submit requirement NotStandardUniverse not met.",
    ),
    refusal(
        # the second ERROR line is the admin's SUBMIT_REQUIREMENT_<NAME>_REASON when set
        r"\bFailed to commit job submission into the queue\b",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.978-981; sample: docs/admin-manual/"
        "ap-policy-configuration.rst (fixture condor_submit.submit-requirement-rejected.txt)",
        "Submitting job(s).\nERROR: Failed to commit job submission into the queue.\n"
        "ERROR: This pool does not accept standard universe jobs.",
    ),
    refusal(
        r"doesn't contain any \"queue\" commands",
        "permanent",
        "src/condor_submit.V6/submit.cpp l.965",
        'ERROR: "/w/.schedulerd/sd-1-1.sub" doesn\'t contain any "queue" commands -- no jobs'
        " queued",
    ),
    # --- the schedd could not answer now ---
    refusal(
        # the limits and user checks above print their own line after it; bare, it is the
        # schedd failing the call (seen under load: dmwm/WMCore issue #9381)
        r"\bFailed to create (?:new )?(?:cluster|proc)\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.2217-2219, l.2294",
        "ERROR: Failed to create cluster",
    ),
    refusal(
        r"\bCEDAR:60\d\d:",
        "transient",
        "src/condor_daemon_client/daemon.cpp l.556 (6001 CONNECT_FAILED; 6002-6009 socket errors)",
        "ERROR: Failed to connect to local queue manager\n"
        "CEDAR:6001:Failed to connect to <127.0.0.1:9618?addrs=127.0.0.1-9618&noUDP&sock=schedd_1>",
    ),
    refusal(
        r"\bSECMAN:2003:",
        "transient",
        "src/condor_io/condor_secman.cpp l.1361, l.1376 (CONNECT_FAILED)",
        "SECMAN:2003:TCP connection to <192.0.2.7:9618> failed.",
    ),
    refusal(
        # alone, a socket write that failed: a busy schedd (it follows a refused
        # authentication only together with the AUTHENTICATE/SECMAN:2010 lines above)
        r"\bSECMAN:2007:",
        "transient",
        "src/condor_io/condor_secman.cpp l.2000 (COMMUNICATIONS_ERROR); sample:"
        " radical-cybertools/radical.saga issue #600 (condor_q on a busy schedd)",
        "-- Failed to fetch ads from: <129.79.53.198:9615?addrs=129.79.53.198-9615&noUDP&"
        "sock=39334_efb7_3> : xd-login.opensciencegrid.org\n"
        "SECMAN:2007:Failed to end classad message.",
    ),
    refusal(
        r"^-- Failed to fetch ads from:",
        "transient",
        "src/condor_q.V6/queue.cpp l.4098 (the error stack follows; rows above read it)",
        "-- Failed to fetch ads from: <192.0.2.7:9618> : ap1.example.org",
    ),
    refusal(
        r"\bFailed to connect to (?:local )?queue manager\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.2050, l.2054 (the error stack follows; rows above"
        " read it)",
        "ERROR: Failed to connect to local queue manager",
    ),
    refusal(
        r"\bCan't find address of (?:local )?schedd\b|\bCould not find the local condor_schedd\b",
        "transient",
        "src/condor_submit.V6/submit.cpp l.766-769; src/condor_q.V6/queue.cpp l.679; sample:"
        " cms-sw/genproductions issue #1177",
        "ERROR: Can't find address of local schedd",
    ),
    refusal(
        r"\bUnable to send request to remote\b",
        "transient",
        "src/condor_tools/history.cpp l.1205",
        "Unable to send request to remote schedd; likely a server or network error.",
    ),
)


def classify(text: str) -> Refusal | None:
    """The first row of :data:`REFUSALS` that matches ``text``, or None."""
    return first_match(REFUSALS, text)
