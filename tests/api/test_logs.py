"""The API's log lines go to the process's standard error (file descriptor 2), not to the object that
was `sys.stderr` when the app was built (a test's captured output, closed since) nor into the output
of a command run in the same process; pds's own lines from INFO up, other libraries' from WARNING up."""

from __future__ import annotations

import logging
import time


def test_log_lines_go_to_the_process_standard_error(client, capfd):
    assert client.get("/health").status_code == 200  # the app is built and started: its logging is set
    capfd.readouterr()
    logging.getLogger("httpx").info("an HTTP client's line per request")
    logging.getLogger("catalog.stac").info("a line of pds's own")
    logging.getLogger("httpx").warning("an HTTP client's warning")
    logging.getLogger("pds.api").warning("the last line")
    written, deadline = "", time.monotonic() + 5
    while "the last line" not in written and time.monotonic() < deadline:
        time.sleep(0.02)  # Litestar's queue thread writes them, in order
        written += capfd.readouterr().err
    lines = [line for line in written.splitlines() if " - " in line]
    assert [line.split(" - ")[0] for line in lines] == ["INFO", "WARNING", "WARNING"], written
    assert "catalog.stac - " in lines[0] and lines[0].endswith("a line of pds's own")
    assert lines[1].endswith("an HTTP client's warning")
    assert "pds.api - " in lines[2] and lines[2].endswith("the last line")
