"""Pushing a file: `PUT /portal/{destination}/{target}` streams the body into the Data Store.

The answer comes only once the content is whole in the store (synchronous push, as `ecpds` does):
it carries the data file id and the queued transfers. Everything is validated before a single byte or
row is written; an upload that breaks off leaves its transfers Failed with the reason, never queued.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import anyio.to_thread
from litestar import Request, Router, put
from litestar.datastructures import State
from litestar.exceptions import InternalServerException
from litestar.params import FromPath, FromQuery
from pydantic import BaseModel

from api.auth import Caller
from catalog.database import session_scope
from catalog.errors import InvalidInput
from catalog.stac import harvest_stored_data_file
from catalog.store import DataStore
from catalog.submission import PushRequest, abort_push, begin_push, finish_push


class QueuedTransfer(BaseModel):
    id: int
    destination: str
    status: str


class PushResult(BaseModel):
    data_file_id: int
    target: str
    size: int
    md5: str
    adler32: str
    transfers: list[QueuedTransfer]


def _int(name: str, value: str | None, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {value!r}") from None


def _raw_target(request: Request[Any, Any, State], destination: str) -> str:
    """The target exactly as sent: path parameters lose a doubled slash, which marks an absolute path."""
    prefix = f"/portal/{destination}/"
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    # Some ASGI servers (and test clients) leave the query string on raw_path.
    path = unquote(raw.split(b"?", 1)[0].decode("latin-1"))
    return path[len(prefix) :] if path.startswith(prefix) else path


def _meta(values: list[str] | None) -> dict[str, Any]:
    meta = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"metadata must be key=value, not {item!r}")
        meta[key] = value
    return meta


@put(
    "/portal/{destination:str}/{target:path}",
    request_max_body_size=None,
    status_code=201,
    tags=["portal"],
    summary="Push a file to a destination",
)
async def push(
    request: Request[Caller, Any, State],
    state: State,
    destination: FromPath[str],
    target: FromPath[str],
    priority: FromQuery[str | None] = None,
    standby: FromQuery[bool] = False,
    delay: FromQuery[str | None] = None,
    lifetime: FromQuery[str | None] = None,
    stream: FromQuery[str | None] = None,
    data_type: FromQuery[str | None] = None,
    time_base: FromQuery[str | None] = None,
    time_step: FromQuery[str | None] = None,
    meta: FromQuery[list[str] | None] = None,
) -> PushResult:
    """Store the body as a data file and queue it to `destination` (and its aliases)."""
    push_request = PushRequest(
        destination=destination,
        target=_raw_target(request, destination),
        priority=_int("priority", priority, 99) or 0,
        standby=standby,
        delay_seconds=_int("delay", delay, 0) or 0,
        lifetime_seconds=_int("lifetime", lifetime, None),
        stream=stream,
        data_type=data_type,
        time_base=time_base,
        time_step=time_step,
        meta=_meta(meta),
    )
    engine, store, by = state.engine, state.store, request.user.login

    def begin() -> tuple[int, list[int]]:
        with session_scope(engine) as session:
            data_file, transfers = begin_push(session, push_request, by=by)
            assert data_file.id is not None
            return data_file.id, [t.id for t in transfers if t.id is not None]

    data_file_id, _ = await anyio.to_thread.run_sync(begin)
    try:
        stored = await _receive(request, store)
    except BaseException as exc:
        reason = (
            "upload broke off: client disconnected"
            if isinstance(exc, InternalServerException)
            else (f"upload failed: {exc}")
        )

        def abort() -> None:
            with session_scope(engine) as session:
                abort_push(session, data_file_id, reason, by=by)

        await anyio.to_thread.run_sync(abort)
        raise

    def finish() -> list[QueuedTransfer]:
        with session_scope(engine) as session:
            queued = finish_push(session, data_file_id, stored, push_request, by=by)
            return [QueuedTransfer(id=t.id or 0, destination=t.destination_name, status=t.status) for t in queued]

    transfers = await anyio.to_thread.run_sync(finish)

    def publish() -> None:
        with session_scope(engine) as session:
            harvest_stored_data_file(session, store, data_file_id, public_url=state.settings.resolved_public_url())

    await anyio.to_thread.run_sync(publish)
    return PushResult(
        data_file_id=data_file_id,
        target=push_request.target,
        size=stored.size,
        md5=stored.md5,
        adler32=stored.adler32,
        transfers=transfers,
    )


async def _receive(request: Request[Caller, Any, State], store: DataStore) -> Any:
    """Stream the body into a new object, writing in store-sized chunks off the event loop."""
    expected = request.headers.get("content-length")
    writer = store.writer()
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= store.chunk_size:
                data, buffer = bytes(buffer), bytearray()
                await anyio.to_thread.run_sync(writer.write, data)
        if buffer:
            await anyio.to_thread.run_sync(writer.write, bytes(buffer))
        if expected is not None and int(expected) != writer.size:
            raise InvalidInput(f"received {writer.size} bytes but Content-Length said {expected}")
        return await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        await anyio.to_thread.run_sync(writer.abort)
        raise


portal_router = Router("/", route_handlers=[push])
