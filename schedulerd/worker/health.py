"""What a cluster's head has told us lately: the last poll, errors, ``degraded``, and the
stop after refused credentials. Shared by the worker's parts, read by the status view."""

from __future__ import annotations

import structlog

#: polls in a row that fail before the cluster is shown ``degraded``
DEGRADED_AFTER = 3


class ClusterHealth:
    """A cluster's health, decided by the poller (failing polls) and the submitter (refused
    credentials). Each change of ``degraded`` is logged once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.foreign_jobs = 0
        self.last_poll: float | None = None
        self.last_error: str | None = None
        # Polls failing in a row. After DEGRADED_AFTER of them the cluster is shown
        # degraded (clusters, info, wait) with the error; the log says so once per change.
        self.poll_failures = 0
        self.degraded_reason: str | None = None
        # The head refused our credentials on a submit: no job is submitted to it until
        # an operator acts (clusters.resume, or a reload), since every job would meet the
        # same; the cluster stays degraded with the head's message meanwhile.
        self.auth_refused: str | None = None
        self._log = structlog.get_logger(__name__).bind(cluster=name)

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def set_degraded(self, reason: str | None) -> None:
        """Show the cluster degraded with ``reason`` (``None``: recovered)."""
        if reason == self.degraded_reason:
            return
        if reason is None:
            self._log.info("cluster_recovered", was=self.degraded_reason)
        else:
            self._log.warning("cluster_degraded", error=reason, failures=self.poll_failures)
        self.degraded_reason = reason

    def poll_failed(self, error: str, *, during: str, auth: bool = False) -> None:
        self.last_error = error
        self.poll_failures += 1
        self._log.debug("poll_failed", error=error, during=during, failures=self.poll_failures)
        if self.auth_refused is not None:
            return  # degraded already, with the head's refusal of our credentials
        if auth:
            self.set_degraded(f"the head refused our credentials: {error}")  # no retry helps
        elif self.poll_failures >= DEGRADED_AFTER:
            self.set_degraded(error)

    def answered(self, at: float) -> None:
        """The head answered a poll at ``at`` (what it said is not yet recorded)."""
        self.last_poll = at
        self.last_error = None

    def poll_succeeded(self) -> None:
        self.poll_failures = 0
        if self.auth_refused is None:
            self.set_degraded(None)

    def refuse_auth(self, refusal: str) -> None:
        """The head refused our credentials on a submit: submits stop, shown degraded."""
        self.auth_refused = refusal
        self.set_degraded(f"the head refused our credentials; submits stopped until"
                          f" clusters resume {self.name}: {refusal}")  # fmt: skip

    def clear_auth(self) -> bool:
        """End the stop after refused credentials; whether there was one."""
        if self.auth_refused is None:
            return False
        self._log.info("submits_resumed_after_auth_refusal", was=self.auth_refused)
        self.auth_refused = None
        failing = self.poll_failures >= DEGRADED_AFTER
        self.set_degraded(self.last_error if failing else None)
        return True
