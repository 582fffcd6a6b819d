"""A small upstream HTTP server for the proxy's and the retriever's tests: serves files from a directory
(GET, HEAD, single ranges), counts GETs per path and the most it answered at once, and can be made
slow or failing per path."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self


class UpstreamServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.gets: Counter[str] = Counter()
        self.active = 0
        """GETs being answered now."""
        self.peak = 0
        """The most GETs answered at once so far."""
        self.delay: dict[str, float] = {}
        self.failing: dict[str, int] = {}
        self.rate: dict[str, int] = {}
        """Bytes per second a path is sent at (unset: as fast as it goes)."""
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                with server._lock:
                    server.gets[self.path] += 1
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                try:
                    self._get()
                finally:
                    with server._lock:
                        server.active -= 1

            def _get(self) -> None:
                time.sleep(server.delay.get(self.path, 0))
                if server.failing.get(self.path, 0) > 0:
                    server.failing[self.path] -= 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                first, last, status = 0, len(data) - 1, 200
                spec = self.headers.get("Range", "")
                if spec.startswith("bytes=") and "," not in spec:
                    a, _, b = spec[6:].partition("-")
                    first, last = (len(data) - int(b), len(data) - 1) if not a else (int(a), int(b or last))
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                self.end_headers()
                if body:
                    self._send(data[first : last + 1], server.rate.get(self.path))

            def _send(self, body: bytes, rate: int | None) -> None:
                if not rate:
                    self.wfile.write(body)
                    return
                piece, started = max(1, rate // 20), time.monotonic()
                for sent in range(0, len(body), piece):
                    self.wfile.write(body[sent : sent + piece])
                    self.wfile.flush()
                    ahead = (sent + piece) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
