"""One exception root for the whole project.

Each class's docstring is its default message. ``code`` is the stable JSON-RPC error code
the control protocol puts on the wire (PROTOCOL.md lists them); ``exit_status`` is what
``schedctl`` exits with for that class of error. ``transient`` decides retry-vs-fail for
errors that come from a head node.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SchedulerdError(Exception):
    """Internal error."""

    code: ClassVar[int] = -32603
    exit_status: ClassVar[int] = 10
    transient: bool = False

    def __init__(self, message: str | None = None, *, data: Any = None) -> None:
        self.message = message or (self.__doc__ or type(self).__name__).strip()
        self.data = data
        super().__init__(self.message)


# --- protocol-level (JSON-RPC reserved codes) --------------------------------------------


class ParseRequestError(SchedulerdError):
    """Malformed JSON."""

    code = -32700
    exit_status = 9


class InvalidRequest(SchedulerdError):
    """Not a valid JSON-RPC 2.0 request."""

    code = -32600
    exit_status = 9


class MethodNotFound(SchedulerdError):
    """Unknown method."""

    code = -32601
    exit_status = 9


class InvalidParams(SchedulerdError):
    """Invalid parameters."""

    code = -32602
    exit_status = 6


# --- application errors --------------------------------------------------------------------


class JobNotFound(SchedulerdError):
    """No job with that id."""

    code = -32001
    exit_status = 4


class InvalidTransition(SchedulerdError):
    """That state change is not allowed from the job's current state."""

    code = -32002
    exit_status = 5


class Conflict(SchedulerdError):
    """The job changed since the version you sent (if_version)."""

    code = -32003
    exit_status = 5


class UnknownDependency(SchedulerdError):
    """A job named in `after` does not exist."""

    code = -32004
    exit_status = 6


class DependencyCycle(SchedulerdError):
    """The dependencies form a cycle."""

    code = -32005
    exit_status = 6


class UnknownCluster(SchedulerdError):
    """No cluster with that name is configured."""

    code = -32006
    exit_status = 6


class MessageTooLarge(SchedulerdError):
    """The message is larger than the daemon accepts."""

    code = -32007
    exit_status = 9


class PermissionDenied(SchedulerdError):
    """This user may not talk to the daemon."""

    code = -32008
    exit_status = 3


class ShuttingDown(SchedulerdError):
    """The daemon is shutting down and accepts no new work."""

    code = -32009
    exit_status = 3


class InvalidSpec(SchedulerdError):
    """The job specification is invalid."""

    code = -32010
    exit_status = 6


class ConfigError(SchedulerdError):
    """The configuration is invalid."""

    code = -32011
    exit_status = 6


class StorageError(SchedulerdError):
    """The database could not be written; nothing of this request was stored."""

    code = -32012
    exit_status = 11


# --- head node / driver errors (never on the wire as such) ---------------------------------


class ParseError(SchedulerdError):
    """Output of a batch-system command could not be parsed."""

    code = -32020


class RemoteCommandError(SchedulerdError):
    """A command on the head node failed."""

    code = -32021

    def __init__(
        self,
        message: str | None = None,
        *,
        exit_status: int | None = None,
        stderr: str = "",
        transient: bool = False,
        auth: bool = False,
        data: Any = None,
    ) -> None:
        super().__init__(message, data=data)
        self.remote_exit_status = exit_status
        self.stderr = stderr
        # auth: the head refused our credentials (authentication or authorisation); no
        # retry can fix it, and every other command to that head meets the same
        self.auth = auth
        self.transient = transient and not auth


class TransportError(SchedulerdError):
    """The head node could not be reached."""

    code = -32022
    transient = True


class SubmitRejected(SchedulerdError):
    """The batch system refused the job."""

    code = -32023

    def __init__(self, message: str | None = None, *, transient: bool = False, auth: bool = False) -> None:
        super().__init__(message)
        # auth: refused for our credentials, not for this job: permanent for the job, and
        # the cluster is degraded (every other job would meet the same)
        self.auth = auth
        self.transient = transient and not auth


def all_error_classes() -> list[type[SchedulerdError]]:
    """Every error class, root first (used to map wire codes back to classes)."""
    found: list[type[SchedulerdError]] = []
    stack: list[type[SchedulerdError]] = [SchedulerdError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def error_class_for_code(code: int) -> type[SchedulerdError]:
    """The class a wire code stands for; the root for codes we do not know."""
    for cls in all_error_classes():
        if cls.code == code:
            return cls
    return SchedulerdError
