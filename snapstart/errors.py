"""The one exception tree of snapstart.

Every error raised through the public API (``snapstart.Manager``, the CLI, the
Invoke API server) is a ``SnapStartError``. Errors from CRIU, netlink, zstd or the
OS are translated at the adapter that met them (``raise X(...) from exc``).

    SnapStartError
     +-- ConfigError                 bad settings, handler string, memory, timeout
     |    +-- InvalidNameError       function name / alias / qualifier fails Lambda's rules
     +-- FunctionNotFoundError       unknown function, version or alias
     +-- PublishError                publish failed (wraps an init failure, dump failure)
     +-- InitError                   the runtime failed its init (errorType from the runtime)
     +-- SandboxError                sandbox could not be created / talked to
     |    +-- InvalidTransition      lifecycle state machine refused a transition
     |    +-- RuntimeExitError       the runtime died mid-invoke   (Runtime.ExitError)
     |    +-- SandboxTimeoutError    the function timed out        (Sandbox.Timedout)
     |    +-- OutOfMemoryError       the clone hit its memory limit (Runtime.OutOfMemory)
     |    +-- AfterRestoreError      an after-restore hook failed  (Runtime.AfterRestoreError)
     +-- CheckpointError             CRIU failed (keeps CRIU's errno and the request type)
     |    +-- DumpError
     |    +-- RestoreError
     +-- SnapshotError
     |    +-- SnapshotIntegrityError a snapshot failed verification (names version + item)
     |    +-- SnapshotIncompatibleError  arch / CRIU / CPU features do not match the host
     +-- StoreError                  the snapshot store itself failed (I/O, disk full)
     +-- ThrottledError              concurrency limits reached (TooManyRequestsException)
     +-- PayloadError                payload not JSON or too large
     +-- EventSourceError            a queue/broker of an event source mapping could not be
                                     reached or used (logged and retried; never returned
                                     to an Invoke API caller)

Each class carries ``error_type``: the dotted name Lambda puts on the wire
(``errorType`` in the body of a function error or the ``x-amzn-ErrorType`` header
of an API error), so the edges never have to guess.
"""

from __future__ import annotations

__all__ = [
    "SnapStartError",
    "ConfigError",
    "InvalidNameError",
    "FunctionNotFoundError",
    "PublishError",
    "InitError",
    "SandboxError",
    "InvalidTransition",
    "RuntimeExitError",
    "SandboxTimeoutError",
    "OutOfMemoryError",
    "AfterRestoreError",
    "CheckpointError",
    "DumpError",
    "RestoreError",
    "SnapshotError",
    "SnapshotIntegrityError",
    "SnapshotIncompatibleError",
    "StoreError",
    "ThrottledError",
    "PayloadError",
    "EventSourceError",
]


class SnapStartError(Exception):
    """Root of every snapstart error."""

    error_type = "ServiceException"

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_type is not None:
            self.error_type = error_type

    def to_lambda(self) -> dict:
        """Lambda's error shape."""
        return {"errorMessage": self.message, "errorType": self.error_type}


class ConfigError(SnapStartError):
    error_type = "InvalidParameterValueException"


class InvalidNameError(ConfigError):
    error_type = "InvalidParameterValueException"


class FunctionNotFoundError(SnapStartError):
    error_type = "ResourceNotFoundException"


class InitError(SnapStartError):
    """The runtime reported (or died during) init. ``error_type`` is the runtime's."""

    error_type = "Runtime.Unknown"

    def __init__(self, message: str, *, error_type: str | None = None,
                 stack_trace: list | None = None) -> None:
        super().__init__(message, error_type=error_type)
        self.stack_trace = stack_trace or []

    def to_lambda(self) -> dict:
        return {"errorMessage": self.message, "errorType": self.error_type,
                "stackTrace": self.stack_trace}


class PublishError(SnapStartError):
    error_type = "SnapStart.PublishError"


class SandboxError(SnapStartError):
    error_type = "Sandbox.Error"
    # what an invocation that ended in this error had produced (Sandbox.invoke sets
    # them): the function's output, how long it ran, its memory high-water mark
    logs: bytes = b""
    duration_ms: float = 0.0
    max_memory_used_mb: int | None = None


class InvalidTransition(SandboxError):
    def __init__(self, current: object, target: object) -> None:
        super().__init__(f"invalid sandbox transition {current} -> {target}")
        self.current = current
        self.target = target


class RuntimeExitError(SandboxError):
    error_type = "Runtime.ExitError"
    retryable = False   # True when the runtime died before the event reached it


class SandboxTimeoutError(SandboxError):
    error_type = "Sandbox.Timedout"


class OutOfMemoryError(SandboxError):
    error_type = "Runtime.OutOfMemory"


class AfterRestoreError(SandboxError):
    error_type = "Runtime.AfterRestoreError"


class CheckpointError(SnapStartError):
    error_type = "SnapStart.CheckpointError"

    def __init__(self, message: str, *, request: str = "", errno: int = 0,
                 log_tail: str = "") -> None:
        detail = message
        if request:
            detail += f" (criu {request}, errno {errno})"
        if log_tail:
            detail += f"\n{log_tail}"
        super().__init__(detail)
        self.request = request
        self.errno = errno
        self.log_tail = log_tail


class DumpError(CheckpointError):
    error_type = "SnapStart.DumpError"


class RestoreError(CheckpointError):
    error_type = "SnapStart.RestoreError"


class SnapshotError(SnapStartError):
    error_type = "SnapStart.SnapshotError"


class SnapshotIntegrityError(SnapshotError):
    error_type = "SnapStart.SnapshotIntegrityError"


class SnapshotIncompatibleError(SnapshotError):
    error_type = "SnapStart.SnapshotIncompatibleError"


class StoreError(SnapStartError):
    error_type = "SnapStart.StoreError"


class ThrottledError(SnapStartError):
    error_type = "TooManyRequestsException"

    def __init__(self, message: str, *, reason: str = "ConcurrentInvocationLimitExceeded",
                 retry_after: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class PayloadError(SnapStartError):
    error_type = "InvalidRequestContentException"


class EventSourceError(SnapStartError):
    """A queue or broker could not be reached or used (connection refused, bad
    credentials, missing queue). The poller logs it, shows it in ``mappings ls`` and
    retries with backoff; it never reaches a caller of the Invoke API."""

    error_type = "EventSourceMapping.SourceError"
