"""The one table from domain errors to HTTP, and the JSON shape of every error the API returns.

Every error body carries a request id; an unexpected error (a 500) is logged with the same id, the
method and the path, so an operator can find what a user reports. Input that is too large for
what Python or the database can hold (integers beyond 64 bits, nesting deeper than the parser's
recursion) is the caller's error, a 400, wherever it is noticed.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import sqlalchemy as sa
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from catalog.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    NotFound,
    NotYetAvailable,
    PdsError,
    QuotaExceeded,
    TransferError,
)

log = logging.getLogger("pds.api")

#: Domain error → HTTP status. The first matching class (in this order) wins.
STATUS_OF: tuple[tuple[type[PdsError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 400),
    (Conflict, 409),
    (AccessDenied, 403),
    (QuotaExceeded, 429),
    (NotYetAvailable, 503),
    (TransferError, 502),
)


def error_body(status: int, reason: str, kind: str, request_id: str | None = None) -> dict[str, object]:
    return {"status": status, "error": kind, "reason": reason, "request_id": request_id or new_request_id()}


def new_request_id() -> str:
    return secrets.token_hex(8)


def _json(status: int, reason: str, kind: str, headers: dict[str, str] | None = None) -> Response[dict[str, object]]:
    return Response(error_body(status, reason, kind), status_code=status, media_type=MediaType.JSON, headers=headers)


def domain_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return _json(status, str(exc), type(exc).__name__, headers)


def http_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500:
        return unexpected_error_handler(_, exc)
    reason = str(exc.detail)
    extra = getattr(exc, "extra", None)
    if extra:
        details = "; ".join(
            f"{e.get('key', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
            for e in (extra if isinstance(extra, list) else [extra])
        )
        reason = f"{reason}: {details}"
    return _json(exc.status_code, reason, type(exc).__name__, exc.headers)


def too_large_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    """Numbers beyond 64 bits, values too long for a column, nesting beyond the recursion limit."""
    if isinstance(exc, RecursionError):
        reason = "the request is nested too deeply"
    elif isinstance(exc, OverflowError):
        reason = "a number in the request is out of range (at most 64 bits)"
    else:
        reason = "a value in the request does not fit: a number out of range or a text too long"
    return _json(400, reason, "InvalidInput")


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    """A 500: logged with its request id and traceback; the body says only the id."""
    request_id = new_request_id()
    log.error(
        "unexpected error %s on %s %s: %s",
        request_id,
        request.method,
        request.url.path,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    body = error_body(500, f"internal error; the API's log has it under request id {request_id}", "InternalError")
    body["request_id"] = request_id
    return Response(body, status_code=500, media_type=MediaType.JSON)


EXCEPTION_HANDLERS = {
    PdsError: domain_error_handler,
    HTTPException: http_error_handler,
    OverflowError: too_large_handler,
    RecursionError: too_large_handler,
    sa.exc.DataError: too_large_handler,
    Exception: unexpected_error_handler,
}
