"""Where the API's log lines go: the process's standard error, through Litestar's non-blocking queue.

Litestar's default handler writes to the `sys.stderr` object of the moment the app is built. Whatever
replaces that object afterwards (a test's captured output, closed once the test ends) would then get
log lines written to a closed stream, or the lines would land in the output of a command run in the
same process. These lines go to the process's own standard error (file descriptor 2, `sys.__stderr__`),
still from Litestar's queue thread so no request waits on the write.
"""

from __future__ import annotations

import logging
import sys

from litestar.logging.config import LoggingConfig
from litestar.logging.standard import QueueListenerHandler

#: pds's own loggers (`pds.*` and modules that log under their own name), which log from INFO up.
PDS_LOGGERS = ("pds", "api", "catalog", "tasks", "flows", "blocks")


def queue_to_stderr() -> QueueListenerHandler:
    """Litestar's queue handler, emptied by its thread into the process's standard error."""
    return QueueListenerHandler(handlers=[logging.StreamHandler(sys.__stderr__ or sys.stderr)])


def logging_config() -> LoggingConfig:
    """Litestar's queue and format, with pds's own lines from INFO up and every other library's from
    WARNING up: an HTTP client's INFO line per request (httpx logs one for every upstream fetch and
    Prefect API call) would otherwise fill the API's log."""
    return LoggingConfig(
        handlers={"queue_listener": {"()": queue_to_stderr, "level": "DEBUG", "formatter": "standard"}},
        root={"handlers": ["queue_listener"], "level": "WARNING"},
        loggers={name: {"level": "INFO"} for name in PDS_LOGGERS},
    )
