"""The client's own HTTP transport (the standard library's, for a fast `pds` command) against a real
HTTP server: query values as httpx writes them, credentials, and a kept-alive connection the server
closed while idle."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.client import ApiError, PdsClient


class ClosingAfterEachAnswer(BaseHTTPRequestHandler):
    """Answers as HTTP/1.1 with keep-alive, then closes the connection: an idle timeout, at once."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 — the name http.server calls
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ClosingAfterEachAnswer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    ClosingAfterEachAnswer.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_connection_closed_while_idle_is_replaced_and_queries_read_as_httpx_writes_them(server):
    client = PdsClient(server, user="admin", password="secret")
    assert (
        client.transfers(destination="site 1", late=True, none=None)["path"]
        == "/transfers?destination=site+1&late=true"
    )
    assert client._request("GET", "/health")["path"] == "/health"  # the first connection is gone by now
    assert [s[2] for s in ClosingAfterEachAnswer.seen] == ["Basic YWRtaW46c2VjcmV0"] * 2


def test_an_api_that_is_not_there_is_one_error():
    with pytest.raises(ApiError, match="cannot reach pds at http://127.0.0.1:9"):
        PdsClient("http://127.0.0.1:9").destinations()


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(ApiError, match="must be http"):
        PdsClient("ftp://example.org")


class ClosingIdleConnections(BaseHTTPRequestHandler):
    """Keeps connections alive but closes one idle for half a second, as uvicorn does after 5 s."""

    protocol_version = "HTTP/1.1"
    timeout = 0.5
    received: list[int] = []

    def do_PUT(self) -> None:  # noqa: N802 — the name http.server calls
        size = int(self.headers["Content-Length"])
        self.received.append(len(self.rfile.read(size)))
        body = json.dumps({"received": size}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_streamed_body_after_an_idle_while_goes_on_a_fresh_connection(monkeypatch):
    import time

    import api.client

    monkeypatch.setattr(api.client, "STREAM_REUSE_SECONDS", 0.2)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ClosingIdleConnections)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = PdsClient(f"http://127.0.0.1:{httpd.server_address[1]}")
        chunks = [b"x" * 65536] * 8
        headers = {"Content-Length": str(65536 * 8)}
        assert client._request("PUT", "/a", content=iter(chunks), headers=headers) == {"received": 65536 * 8}
        time.sleep(1.0)  # the server has closed the kept-alive connection by now
        # A body from an iterator cannot be sent twice: it must not start on the dead connection.
        assert client._request("PUT", "/b", content=iter(chunks), headers=headers) == {"received": 65536 * 8}
        assert ClosingIdleConnections.received == [65536 * 8] * 2
    finally:
        httpd.shutdown()
        httpd.server_close()
