"""Multipart uploads through the portal's S3 endpoint, staged in the Data Store until completed.

An upload is a folder `multipart/<upload id>/` holding its manifest (`upload.json`: who, where to,
when it began) and its parts (`part-00001`, …). Completing it composes the parts into a data file
and removes the folder; aborting removes the folder. A client that does neither leaves the folder
behind: purge removes those older than `PDS_MULTIPART_RETENTION_SECONDS` (7 days), as an S3
bucket's "abort incomplete multipart uploads" lifecycle rule does.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.errors import NotFound
from catalog.store import DataStore

PREFIX = "multipart"


@dataclass(frozen=True)
class Manifest:
    login: str
    path: str
    """The portal path the upload becomes."""
    started_at: datetime | None
    """None for uploads begun before the manifest said when (their folder's time is used)."""


def _checked(upload_id: str) -> str:
    # Ids are uuid4 hex; anything else could name another folder of the store.
    if not upload_id.isalnum():
        raise NotFound(f"no multipart upload {upload_id!r}")
    return upload_id


def manifest_key(upload_id: str) -> str:
    return f"{PREFIX}/{_checked(upload_id)}/upload.json"


def part_key(upload_id: str, number: int) -> str:
    return f"{PREFIX}/{_checked(upload_id)}/part-{number:05d}"


def begin(store: DataStore, login: str, path: str, now: datetime | None = None) -> str:
    """Stage a new upload of `path` by `login`; its id."""
    upload_id = uuid.uuid4().hex
    manifest = {"login": login, "path": path, "started_at": (now or datetime.now(UTC)).isoformat()}
    store.put_stream([json.dumps(manifest).encode()], manifest_key(upload_id))
    return upload_id


def read_manifest(store: DataStore, upload_id: str) -> Manifest:
    key = manifest_key(upload_id)
    if not store.exists(key):
        raise NotFound(f"no multipart upload {upload_id}")
    with store.open(key) as f:
        raw: dict[str, Any] = json.loads(f.read())
    started = raw.get("started_at")
    return Manifest(raw["login"], raw["path"], datetime.fromisoformat(started) if started else None)


def drop(store: DataStore, upload_id: str) -> None:
    """Remove an upload's folder: its manifest and every part."""
    folder = store._path(f"{PREFIX}/{_checked(upload_id)}")
    if store.fs.exists(folder):
        store.fs.rm(folder, recursive=True)


def _started(store: DataStore, upload_id: str) -> datetime | None:
    try:
        manifest = read_manifest(store, upload_id)
    except NotFound:
        manifest = None  # parts without a manifest: an abort or completion cut off half-way
    except (ValueError, KeyError):
        manifest = None  # an unreadable manifest: judged by its folder's time too
    if manifest is not None and manifest.started_at is not None:
        return manifest.started_at
    try:
        modified: datetime = store.fs.modified(store._path(f"{PREFIX}/{upload_id}"))
    except (FileNotFoundError, NotImplementedError, OSError):
        return None
    return modified if modified.tzinfo else modified.replace(tzinfo=UTC)


def remove_abandoned(store: DataStore, older_than: timedelta, now: datetime | None = None) -> int:
    """Remove the staged uploads begun more than `older_than` ago; how many went."""
    root = store._path(PREFIX)
    if not store.fs.exists(root):
        return 0
    cutoff = (now or datetime.now(UTC)) - older_than
    removed = 0
    for entry in store.fs.ls(root, detail=False):
        upload_id = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if not upload_id.isalnum():
            continue
        started = _started(store, upload_id)
        if started is not None and started < cutoff:
            drop(store, upload_id)
            removed += 1
    return removed
