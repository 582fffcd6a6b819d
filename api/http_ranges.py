"""HTTP byte ranges and conditional requests (RFC 9110) for files of a known size."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime


class Unsatisfiable(Exception):
    """The Range header names no byte of the file (416)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `bytes=` range; None to send the whole file (no header, a
    syntax we ignore as RFC 9110 allows, or several ranges). Raises Unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_text:  # suffix: the last N bytes
            suffix = int(last_text)
            if suffix <= 0:
                raise Unsatisfiable
            return max(0, size - suffix), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size:
        raise Unsatisfiable
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def _parse_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def etag_matches(header: str, etag: str) -> bool:
    candidates = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in candidates or etag in candidates


def not_modified(headers: dict[str, str], etag: str, modified: datetime) -> bool:
    """If-None-Match (preferred) or If-Modified-Since says the client's copy is current (304)."""
    if "if-none-match" in headers:
        return etag_matches(headers["if-none-match"], etag)
    since = _parse_date(headers.get("if-modified-since", ""))
    return since is not None and modified.replace(microsecond=0) <= since


def precondition_failed(headers: dict[str, str], etag: str, modified: datetime) -> bool:
    """If-Match or If-Unmodified-Since fails (412)."""
    if "if-match" in headers:
        return not etag_matches(headers["if-match"], etag)
    since = _parse_date(headers.get("if-unmodified-since", ""))
    return since is not None and modified.replace(microsecond=0) > since


def range_applies(headers: dict[str, str], etag: str, modified: datetime) -> bool:
    """If-Range: the range is served only if the client's validator still matches."""
    condition = headers.get("if-range")
    if condition is None:
        return True
    if condition.startswith(('"', "W/")):
        return condition == etag
    when = _parse_date(condition)
    return when is not None and modified.replace(microsecond=0) <= when
