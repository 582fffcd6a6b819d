"""Small builders for test data, through the same catalog functions the API uses."""

from __future__ import annotations

import os

from catalog.config import attach_host, create_destination, create_host
from catalog.database import session_scope
from catalog.models import DestinationCreate, HostCreate, HostKind
from catalog.submission import PushRequest, begin_push, finish_push


def destination(engine, name="site1", *, host: HostCreate | None = None, **settings):
    with session_scope(engine) as session:
        create_destination(session, DestinationCreate(name=name, **settings))
        if host is not None:
            create_host(session, host, known_protocols=frozenset({"file", "sftp", "s3"}))
            attach_host(session, name, host.name, HostKind.DISSEMINATION)


def local_host(name: str, directory: str) -> HostCreate:
    return HostCreate(name=name, protocol="file", address=directory)


def push(engine, store, destination="site1", target="f.bin", *, data: bytes | None = None, **fields):
    """Push `data` (random by default) and return (data_file_id, [transfer ids])."""
    request = PushRequest(destination=destination, target=target, **fields)
    with session_scope(engine) as session:
        data_file, transfers = begin_push(session, request, by="test")
    stored = store.put_stream([data if data is not None else os.urandom(1000)])
    with session_scope(engine) as session:
        finish_push(session, data_file.id, stored, request, by="test")
    return data_file.id, [t.id for t in transfers]
