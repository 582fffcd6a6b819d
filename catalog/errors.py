"""The domain's errors, free of HTTP: `api/errors.py` maps them to status codes in one table.

PdsError
├── NotFound              an entity named by the caller does not exist
├── InvalidInput          the caller's input is malformed or out of range
├── Conflict              the request contradicts current state (duplicate, forbidden transition)
├── AccessDenied          authenticated, but not allowed to do this
├── QuotaExceeded         a data user's byte quota or connection limit is used up
├── NotYetAvailable       the content is being fetched from its source: retry later
└── TransferError         moving bytes failed; `next_action` tells the scheduler what to do
    ├── RetryOnSameHost   transient: try the same host again later
    ├── FailOverToNextHost the host is unusable now: try the next host of the destination
    └── FailTransfer      retrying cannot help: stop the transfer, keep the reason
"""

from __future__ import annotations

from enum import StrEnum


class PdsError(Exception):
    """Base of every error pds raises on purpose."""


class NotFound(PdsError):
    """An entity named by the caller does not exist."""


class InvalidInput(PdsError):
    """The caller's input is malformed or out of range."""


class Conflict(PdsError):
    """The request contradicts the current state."""


class AccessDenied(PdsError):
    """The caller is known but may not do this."""


class QuotaExceeded(PdsError):
    """A data user's rolling byte quota or connection limit is used up; `retry_after` in seconds."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotYetAvailable(PdsError):
    """The file is known but its content is still being fetched from its source; `retry_after` in seconds."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NextAction(StrEnum):
    """What the scheduler does after a failed transfer attempt."""

    RETRY = "retry"
    FAILOVER = "failover"
    FAIL = "fail"


class TransferError(PdsError):
    """A transfer attempt failed; subclasses say what to do next. The message keeps the server's words."""

    next_action: NextAction = NextAction.RETRY


class RetryOnSameHost(TransferError):
    """Transient failure (timeout, reset connection, size mismatch): retry on the same host."""

    next_action = NextAction.RETRY


class FailOverToNextHost(TransferError):
    """The host cannot be used now (refused connection, unknown host): try the next host."""

    next_action = NextAction.FAILOVER


class FailTransfer(TransferError):
    """Retrying cannot help (bad credentials, permission denied, missing source): stop."""

    next_action = NextAction.FAIL
