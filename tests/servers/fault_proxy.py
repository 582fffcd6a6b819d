"""A TCP proxy in front of a real server that can stall its connections, as a hung network does.

`StallingProxy(target_port)` forwards every connection to the target. After `stall()`, or once a
connection has carried `stall_after` bytes towards the server, it stops forwarding and stops reading
that connection — without closing it, so the client sees no error, only silence: its writes fill the
socket buffers and block. `stalled_at` is when the first connection went silent; `open_sessions` how
many client connections are open now.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class StallingProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", stall_after: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.stall_after = stall_after
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.stalled_at: float | None = None
        self._stalled = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open_sessions = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        """Every connection goes silent now (new ones too)."""
        if self.stalled_at is None:
            self.stalled_at = time.monotonic()
        self._stalled.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
                self.open_sessions += 1
            upstream = threading.Thread(target=self._pipe, args=(client, server, True), daemon=True)
            downstream = threading.Thread(target=self._pipe, args=(server, client, False), daemon=True)
            upstream.start()
            downstream.start()

    def _pipe(self, source: socket.socket, sink: socket.socket, towards_server: bool) -> None:
        carried = 0
        try:
            while not self._stalled.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if self._stalled.is_set():
                    break
                sink.sendall(data)
                carried += len(data)
                if towards_server and self.stall_after is not None and carried >= self.stall_after:
                    self.stall()
        except OSError:
            pass
        if self._stalled.is_set():
            return  # silent: the sockets stay open and unread
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if towards_server:
            with self._lock:
                self.open_sessions -= 1

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
