"""The one table from domain errors to HTTP, and the JSON shape of every error the API returns."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from catalog.errors import AccessDenied, Conflict, InvalidInput, NotFound, PdsError, QuotaExceeded, TransferError

#: Domain error → HTTP status. The first matching class (in this order) wins.
STATUS_OF: tuple[tuple[type[PdsError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 400),
    (Conflict, 409),
    (AccessDenied, 403),
    (QuotaExceeded, 429),
    (TransferError, 502),
)


def error_body(status: int, reason: str, kind: str) -> dict[str, object]:
    return {"status": status, "error": kind, "reason": reason}


def domain_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return Response(
        error_body(status, str(exc), type(exc).__name__), status_code=status, media_type=MediaType.JSON, headers=headers
    )


def http_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, HTTPException)
    reason = str(exc.detail)
    extra = getattr(exc, "extra", None)
    if extra:
        details = "; ".join(
            f"{e.get('key', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
            for e in (extra if isinstance(extra, list) else [extra])
        )
        reason = f"{reason}: {details}"
    return Response(
        error_body(exc.status_code, reason, type(exc).__name__),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


EXCEPTION_HANDLERS = {PdsError: domain_error_handler, HTTPException: http_error_handler}
