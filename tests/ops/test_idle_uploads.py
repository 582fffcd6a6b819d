"""An upload whose client goes silent ends Failed ("upload broke off") after the idle time, its partial
content dropped and what the client sends late refused; a slow upload that keeps sending is never
taken for an idle one. Against the API and a mover as real processes."""

from __future__ import annotations

import base64
import contextlib
import socket
import time

import pytest

from tests.ops.stack import PdsProcesses
from tests.servers._common import wait_until

IDLE = 10  # seconds: the smallest idle time the setting takes
SIZE = 3 * 1024 * 1024


@pytest.fixture
def stack(tmp_path, prefect_server):
    stack = PdsProcesses(tmp_path, prefect_server.api_url)
    stack.env["PDS_UPLOAD_IDLE_SECONDS"] = str(IDLE)
    stack.start_api()
    stack.start_mover("mover-1")
    yield stack
    stack.stop()


def start_put(stack: PdsProcesses, target: str, size: int) -> socket.socket:
    """A `PUT /portal/...` whose body the test sends itself, piece by piece."""
    connection = socket.create_connection(("127.0.0.1", stack.api_port), timeout=60)
    credentials = base64.b64encode(b"admin:admin").decode()
    connection.sendall(
        (
            f"PUT /portal/drop/{target} HTTP/1.1\r\nHost: pds\r\nAuthorization: Basic {credentials}\r\n"
            f"Content-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    return connection


def answer(connection: socket.socket) -> str:
    received = b""
    try:
        while b"\r\n\r\n" not in received and (piece := connection.recv(65536)):
            received += piece
    except OSError:
        pass
    return received.decode(errors="replace").split("\r\n", 1)[0]


def test_a_silent_upload_fails_and_a_slow_one_arrives(stack, tmp_path):
    client = stack.client
    client.create_destination("drop")
    client.create_host("drop-disk", "file", address=str(tmp_path / "site"))
    client.attach_host("drop", "drop-disk")

    silent = start_put(stack, "silent.bin", SIZE)
    silent.sendall(b"s" * (SIZE // 3))
    slow = start_put(stack, "slow.bin", SIZE)
    sent = 0
    piece = SIZE // 40
    started = time.monotonic()

    def by_target() -> dict[str, dict]:
        return {t["target"]: t for t in client.transfers(destination="drop", limit=100)}

    # The slow upload sends a little every half second, for longer than the idle time.
    while sent < SIZE:
        chunk = min(piece, SIZE - sent)
        slow.sendall(b"w" * chunk)
        sent += chunk
        time.sleep(0.5)
    assert time.monotonic() - started > IDLE * 1.5, "the slow upload ended before the idle time: it proves nothing"
    assert answer(slow).startswith("HTTP/1.1 201"), "the slow upload was refused"

    wait_until(lambda: by_target()["silent.bin"]["status"] == "Failed", 60, "the silent upload to be failed")
    failed = client.transfer(by_target()["silent.bin"]["id"])
    assert failed["error"].startswith("upload broke off: nothing arrived for 10 s")
    assert failed["history"][-1]["by"] == "mover-1"

    # What the silent client sends late is refused, and nothing of it is kept.
    with contextlib.suppress(OSError):  # the API may already have closed the connection
        silent.sendall(b"s" * (SIZE - SIZE // 3))
    reply = answer(silent)
    assert reply == "" or reply.startswith("HTTP/1.1 409"), reply
    assert by_target()["silent.bin"]["status"] == "Failed"
    assert not list((tmp_path / "data" / "store" / "tmp").glob("*")), "the partial content was kept"

    wait_until(lambda: by_target()["slow.bin"]["status"] == "Done", 60, "the slow upload to be delivered")
    assert (tmp_path / "site" / "slow.bin").read_bytes() == b"w" * SIZE
    assert not (tmp_path / "site" / "silent.bin").exists()
