"""Where the API's log lines go: standard error, through Litestar's non-blocking queue.

Litestar's default handler binds the `sys.stderr` of the moment the app is built. Anything that swaps
standard error afterwards (a test's captured output, a supervisor that redirects it) then gets log
lines written to a stream that may be closed by then. These lines go to the `sys.stderr` of the
moment each line is written, still from Litestar's queue thread so no request waits on the write.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from litestar.logging.config import LoggingConfig
from litestar.logging.standard import QueueListenerHandler


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever `sys.stderr` is when a line is written."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignored: the stream is always the current standard error."""


def queue_to_stderr() -> QueueListenerHandler:
    """Litestar's queue handler, emptied by its thread into `CurrentStderr`."""
    return QueueListenerHandler(handlers=[CurrentStderr()])


#: pds's own loggers (`pds.*` and modules that log under their own name), which log from INFO up.
PDS_LOGGERS = ("pds", "api", "catalog", "tasks", "flows", "blocks")


def logging_config() -> LoggingConfig:
    """Litestar's queue and format, with pds's own lines from INFO up and every other library's from
    WARNING up: an HTTP client's INFO line per request (httpx logs one for every upstream fetch and
    Prefect API call) would otherwise fill the API's log."""
    return LoggingConfig(
        handlers={"queue_listener": {"()": queue_to_stderr, "level": "DEBUG", "formatter": "standard"}},
        root={"handlers": ["queue_listener"], "level": "WARNING"},
        loggers={name: {"level": "INFO"} for name in PDS_LOGGERS},
    )
