"""The API's log lines reach the standard error of the moment they are written, not a stream that was
standard error when the app was built (a test's captured output, closed since); pds's own lines from
INFO up, other libraries' from WARNING up."""

from __future__ import annotations

import io
import logging
import sys
import time


def test_a_log_line_goes_to_the_current_standard_error(client, monkeypatch):
    assert client.get("/health").status_code == 200  # the app is built and started: its logging is set
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("httpx").info("an HTTP client's line per request")
    logging.getLogger("catalog.stac").info("a line of pds's own")
    logging.getLogger("httpx").warning("an HTTP client's warning")
    logging.getLogger("pds.api").warning("a line written after standard error changed")
    deadline = time.monotonic() + 5
    while "a line written after" not in later.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)  # Litestar's queue thread writes them, in order
    lines = later.getvalue().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["INFO", "WARNING", "WARNING"], lines
    assert "catalog.stac - " in lines[0] and lines[0].endswith("a line of pds's own")
    assert lines[1].endswith("an HTTP client's warning")
    assert "pds.api - " in lines[2] and lines[2].endswith("a line written after standard error changed")
