"""What the outside world hears about each attempt: an event line (UPH when a file is delivered,
ERR when an attempt fails) and, for destinations that ask for it, an MQTT notification on Done.

The lines and notifications are outbox rows (`catalog.outbox`), added in the transaction that records
the outcome: the lines by `catalog.transfers` itself, the notifications here (their payloads are
built by `catalog.notifications`). `tasks.publishing` copies them out after the commit. Reporting never changes
the outcome: a broker that cannot be reached delays a notification, it does not fail a transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlmodel import Session, col, select

from catalog import outbox
from catalog.events import EventLog
from catalog.models import DataFile, DataTransfer, Destination, Host, utcnow
from catalog.notifications import Notification, is_http, portal_url, render
from catalog.settings import Settings
from tasks.notify import Publisher

log = logging.getLogger("pds.reporting")


@lru_cache(maxsize=1)
def event_log(target: str | None) -> EventLog:
    """One open event log per process and target (movers write from many threads)."""
    return EventLog.open(target)


@lru_cache(maxsize=1)
def publisher() -> Publisher:
    return Publisher(timeout=10.0)


@dataclass(frozen=True)
class DoneReport:
    """What the UPH line and notification of one Done transfer are made of."""

    transfer: DataTransfer
    data_file: DataFile
    destination: Destination
    host: Host | None
    remote_path: str


def done_reports(session: Session, done: Sequence[tuple[DataTransfer, str]]) -> list[DoneReport]:
    """The rows behind the reports of Done transfers (each with its path at the site), read with
    a few queries for a whole batch — in the transaction that recorded them, so no other is needed."""
    transfers = [t for t, _ in done]
    file_ids, names = {t.data_file_id for t in transfers}, {t.destination_name for t in transfers}
    host_names = {t.host_name for t in transfers if t.host_name}
    data_files = {f.id: f for f in session.exec(select(DataFile).where(col(DataFile.id).in_(file_ids)))}
    destinations = {d.name: d for d in session.exec(select(Destination).where(col(Destination.name).in_(names)))}
    hosts = {h.name: h for h in session.exec(select(Host).where(col(Host.name).in_(host_names)))}
    reports = []
    for transfer, remote_path in done:
        data_file, destination = data_files.get(transfer.data_file_id), destinations.get(transfer.destination_name)
        if data_file is not None and destination is not None:
            host = hosts.get(transfer.host_name) if transfer.host_name else None
            reports.append(DoneReport(transfer, data_file, destination, host, remote_path))
    return reports


def add_notifications(session: Session, settings: Settings, reports: Sequence[DoneReport]) -> None:
    """Transfers are being recorded Done: the notification of each whose destination has a topic, as
    outbox rows of the same transaction."""
    if not settings.mqtt_url:
        return
    rendered = []
    for r in reports:
        if r.destination.mqtt_topic:
            message = notification(settings, r.transfer, r.data_file, r.destination, r.host, r.remote_path)
            if message is not None:
                rendered.append(message)
    outbox.add_notifications(session, rendered)


#: URL schemes of object stores, whose paths start with the bucket (or container).
_OBJECT_STORES = {"s3": "s3", "gcs": "gs", "azure": "az"}


def fetch_url(host: Host | None, remote_path: str) -> str:
    """Where the product can be fetched at the site: the host's URL of the file.

    `remote_path` is the path on the host's filesystem as the mover wrote it: absolute for `file` and
    SFTP/FTP, `bucket/key` for object stores, relative to the base URL for HTTP.
    """
    path = remote_path.lstrip("/")
    if host is None:
        return remote_path
    if host.protocol in ("http", "https", "webdav"):
        base = host.address if "://" in host.address else f"{host.protocol}://{host.address}"
        return f"{base.rstrip('/')}/{path}"
    if host.protocol == "file":
        return f"file:///{path}"
    if host.protocol in _OBJECT_STORES:
        return f"{_OBJECT_STORES[host.protocol]}://{path}"
    address = host.address.split("://", 1)[-1].rstrip("/")
    return f"{host.protocol}://{address}/{path}"


def notification(
    settings: Settings,
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    host: Host | None,
    remote_path: str,
) -> outbox.Notification | None:
    """The rendered notification of a Done transfer, None (with a warning) if it cannot be made."""
    try:
        return render(settings, destination, delivered(settings, transfer, data_file, destination, host, remote_path))
    except ValueError as exc:
        log.warning("notification of transfer %s to %s not published: %s", transfer.id, destination.name, exc)
        return None


def delivered(
    settings: Settings,
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    host: Host | None,
    remote_path: str,
) -> Notification:
    """What the notification of a Done transfer says; ValueError if that cannot be said.

    Its `url` is the file at the site. Subscribers download from the site itself when that is an
    HTTP(S) URL holding the original bytes; otherwise (SFTP, FTP, object stores, a compressed copy)
    from the Data Portal, which serves the original: the SHA-512 of a `wis2` message's integrity is
    always of the bytes its canonical link serves.
    """
    assert destination.mqtt_topic is not None and transfer.id is not None and data_file.id is not None
    site = fetch_url(host, remote_path)
    original = not transfer.compression
    download = site if original and is_http(site) else portal_url(settings, destination.name, transfer.target)
    return Notification(
        name=transfer.target,
        size=transfer.bytes_sent or data_file.size or 0,  # what the site got (compressed or not)
        md5=transfer.sent_md5 or data_file.md5 or "0" * 32,
        adler32=data_file.adler32 if original else None,
        sha512=data_file.sha512,
        destination=destination.name,
        data_file_id=data_file.id,
        transfer_id=transfer.id,
        available_at=transfer.finished_at or utcnow(),
        url=site,
        download_url=download,
        download_size=data_file.size,
    )
