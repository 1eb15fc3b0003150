"""One exception root for the whole project.

Each class's docstring is its default message. ``code`` is the stable JSON-RPC error code
the control protocol puts on the wire (PROTOCOL.md lists them); ``exit_status`` is what
``schedctl`` exits with for that class of error, and ``exit_help`` how ``schedctl --help``
names the case (its list of exit statuses is made from these classes, so a new class
cannot be left out of it). ``transient`` decides retry-vs-fail for errors that come from a
head node.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: ``schedctl --help``: what an exit status several classes share means; the classes'
#: ``exit_help`` follow it in parentheses
EXIT_STATUS_SUMMARY: dict[int, str] = {
    3: "cannot reach the daemon",
    5: "the state change is not allowed now",
    6: "invalid input",
    9: "protocol error",
}


class SchedulerdError(Exception):
    """Internal error."""

    code: ClassVar[int] = -32603
    exit_status: ClassVar[int] = 10
    exit_help: ClassVar[str] = "internal daemon error"
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
    exit_help = "malformed request"


class InvalidRequest(SchedulerdError):
    """Not a valid JSON-RPC 2.0 request."""

    code = -32600
    exit_status = 9
    exit_help = "not a JSON-RPC request"


class MethodNotFound(SchedulerdError):
    """Unknown method."""

    code = -32601
    exit_status = 9
    exit_help = "unknown method"


class InvalidParams(SchedulerdError):
    """Invalid parameters."""

    code = -32602
    exit_status = 6
    exit_help = "bad parameters"


# --- application errors --------------------------------------------------------------------


class JobNotFound(SchedulerdError):
    """No job with that id."""

    code = -32001
    exit_status = 4
    exit_help = "no such job"


class InvalidTransition(SchedulerdError):
    """That state change is not allowed from the job's current state."""

    code = -32002
    exit_status = 5
    exit_help = "illegal transition"


class Conflict(SchedulerdError):
    """The job changed since the version you sent (if_version)."""

    code = -32003
    exit_status = 5
    exit_help = "version conflict"


class UnknownDependency(SchedulerdError):
    """A job named in `after` does not exist."""

    code = -32004
    exit_status = 6
    exit_help = "unknown dependency"


class DependencyCycle(SchedulerdError):
    """The dependencies form a cycle."""

    code = -32005
    exit_status = 6
    exit_help = "cycle"


class UnknownCluster(SchedulerdError):
    """No cluster with that name is configured."""

    code = -32006
    exit_status = 6
    exit_help = "unknown cluster"


class MessageTooLarge(SchedulerdError):
    """The message is larger than the daemon accepts."""

    code = -32007
    exit_status = 9
    exit_help = "message too large"


class PermissionDenied(SchedulerdError):
    """This user may not talk to the daemon."""

    code = -32008
    exit_status = 3
    exit_help = "permission denied"


class ShuttingDown(SchedulerdError):
    """The daemon is shutting down and accepts no new work."""

    code = -32009
    exit_status = 3
    exit_help = "shutting down"


class InvalidSpec(SchedulerdError):
    """The job specification is invalid."""

    code = -32010
    exit_status = 6
    exit_help = "bad job spec"


class ConfigError(SchedulerdError):
    """The configuration is invalid."""

    code = -32011
    exit_status = 6
    exit_help = "bad configuration value"


class StorageError(SchedulerdError):
    """The database could not be written; nothing of this request was stored."""

    code = -32012
    exit_status = 11
    exit_help = (
        "the daemon could not write its database (disk full, I/O error); nothing was changed"
    )


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

    def __init__(
        self, message: str | None = None, *, transient: bool = False, auth: bool = False
    ) -> None:
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
