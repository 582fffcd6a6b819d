"""The API's log lines reach the standard error of the moment they are written, not a stream that was
standard error when the app was built (a test's captured output, closed since)."""

from __future__ import annotations

import io
import logging
import sys
import time


def test_a_log_line_goes_to_the_current_standard_error(client, monkeypatch):
    assert client.get("/health").status_code == 200  # the app is built and started: its logging is set
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("pds.api").warning("a line written after standard error changed")
    deadline = time.monotonic() + 5
    while "a line written after" not in later.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)  # Litestar's queue thread writes it
    assert "WARNING" in later.getvalue()
    assert "pds.api - " in later.getvalue() and "a line written after standard error changed" in later.getvalue()
