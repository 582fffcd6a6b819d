"""A web application that takes uploads by POST, raw or as `multipart/form-data`, like a site's upload
endpoint (no WebDAV, no PUT). Every request needs `Authorization: Bearer <token>` and the header
`X-Upload-Key: <key>`, so bearer tokens and custom headers are checked, not assumed.

The file part of a form is parsed as it streams in and written to disk without being held in memory.
Started as a process by `UploadServer`: python -m tests.servers.upload_server PORT ROOT TOKEN KEY
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

from tests.servers._common import Server, free_port, spawn, tcp_ready, terminate, wait_until

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class UploadServer(Server):
    token = "upload-token"  # noqa: S105 — a test server's fixed credential
    key = "site-key"

    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir).resolve()
        self.data_dir = self.root / "data"
        self.host, self.port = "127.0.0.1", free_port()
        self.base_url = f"http://{self.host}:{self.port}"
        self.log = self.root / "upload-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tests.servers.upload_server", str(self.port), str(self.data_dir)]
        self.process = spawn([*command, self.token, self.key], self.log, cwd=Path(__file__).resolve().parents[2])
        wait_until(lambda: tcp_ready(self.host, self.port), 20, "upload server", log=self.log, process=self.process)
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


def application(root: Path, token: str, key: str) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        relative = unquote(scope["path"]).lstrip("/")
        target = (root / relative).resolve()
        if headers.get("authorization") != f"Bearer {token}" or headers.get("x-upload-key") != key:
            return await answer(send, 401, b"missing or wrong bearer token or X-Upload-Key")
        if target != root and root not in target.parents:
            return await answer(send, 403, b"outside the upload area")
        method = scope["method"]
        if method in ("GET", "HEAD"):
            if not target.is_file():
                return await answer(send, 404, b"no such file")
            stat = target.stat()
            extra = [(b"last-modified", email.utils.formatdate(stat.st_mtime, usegmt=True).encode())]
            body = b"" if method == "HEAD" else target.read_bytes()
            return await answer(send, 200, body, length=stat.st_size, extra=extra)
        if method == "DELETE":
            if not target.is_file():
                return await answer(send, 404, b"no such file")
            target.unlink()
            return await answer(send, 204, b"")
        if method != "POST":
            return await answer(send, 405, b"uploads are POST only")
        content_type = headers.get("content-type", "")
        found = re.search(r"boundary=([^;]+)", content_type)
        if content_type.startswith("multipart/form-data") and found:
            saved = await save_form(body_of(receive), found.group(1).strip('"').encode(), target)
            if saved is None:
                return await answer(send, 400, b"no file part in the form")
            return await answer(send, 201, saved.encode())
        await save(body_of(receive), target)
        return await answer(send, 201, b"stored")

    return app


async def answer(send: Send, status: int, body: bytes, *, length: int | None = None, extra: list[Any] = ()) -> None:  # type: ignore[assignment]
    size = len(body) if length is None else length
    headers = [(b"content-length", str(size).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def body_of(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def save(chunks: AsyncIterator[bytes], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with partial.open("wb") as out:
        async for chunk in chunks:
            out.write(chunk)
    os.replace(partial, target)


async def save_form(chunks: AsyncIterator[bytes], boundary: bytes, directory: Path) -> str | None:
    """Write the form's file part to `directory`/<its filename> and the other fields to
    `directory`/.form.json; return the file's name. The buffer never holds more than one chunk plus
    a boundary's length."""
    delimiter = b"\r\n--" + boundary
    buffer, state, out, fields = b"\r\n", "start", None, {}
    field: str | None = None
    value = b""
    filename: str | None = None
    async for chunk in chunks:
        buffer += chunk
        while True:
            if state == "start":
                at = buffer.find(delimiter + b"\r\n")
                if at < 0:
                    break
                buffer, state = buffer[at + len(delimiter) + 2 :], "headers"
            elif state == "headers":
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head, buffer = buffer[:end].decode(), buffer[end + 4 :]
                field = (re.search(r'name="([^"]*)"', head) or [None, None])[1]
                named = re.search(r'filename="([^"]*)"', head)
                if named:
                    filename = Path(named.group(1)).name
                    directory.mkdir(parents=True, exist_ok=True)
                    out = (directory / f".{filename}.part").open("wb")
                state, value = "part", b""
            else:  # inside a part: everything up to the next delimiter is its content
                at = buffer.find(delimiter)
                keep = len(delimiter) + 2
                if at < 0:
                    take, buffer = (
                        buffer[:-keep] if len(buffer) > keep else b"",
                        buffer[-keep:] if len(buffer) > keep else buffer,
                    )
                    if out is not None:
                        out.write(take)
                    else:
                        value += take
                    break
                if len(buffer) < at + len(delimiter) + 2:
                    break  # need the two bytes after the delimiter
                content, after = buffer[:at], buffer[at + len(delimiter) : at + len(delimiter) + 2]
                buffer = buffer[at + len(delimiter) + 2 :]
                if out is not None:
                    out.write(content)
                    out.close()
                    os.replace(directory / f".{filename}.part", directory / str(filename))
                    out = None
                elif field is not None:
                    fields[field] = (value + content).decode()
                if after == b"--":
                    (directory / ".form.json").write_text(json.dumps(fields))
                    return filename
                state = "headers"
    return None


if __name__ == "__main__":
    import uvicorn

    port, root, token, key = int(sys.argv[1]), Path(sys.argv[2]).resolve(), sys.argv[3], sys.argv[4]
    uvicorn.run(application(root, token, key), host="127.0.0.1", port=port, log_level="warning")
