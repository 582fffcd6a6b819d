"""Notifications on arrival: a destination with `mqtt_on_arrival` announces each file that arrives on it.

OpenECPDS announces a file when it *arrives* on a destination, not only when it is pushed to a remote
site: an upload through the Data Portal that completes, or a retrieval that completes. The message
is added to the outbox in the transaction that makes the file available (its transfer leaves
Arriving or Fetching), so it is published at least once, with the same message id on every copy,
and never for a file that did not become available.

A file uploaded under a temporary name (`x.part`) has not arrived yet: it is announced when it is
renamed to its final name. The message's URL is the file's Data Portal URL, the one place every
arrival can be downloaded from over HTTPS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlmodel import Session

from catalog import outbox
from catalog.models import DataFile, DataTransfer, Destination, utcnow
from catalog.notifications import Notification, portal_url, render
from catalog.settings import Settings

log = logging.getLogger("pds.arrivals")


def announce_arrivals(
    session: Session,
    settings: Settings | None,
    transfers: Sequence[DataTransfer],
    *,
    temporary: Callable[[str], bool] = lambda target: False,
) -> int:
    """Add the arrival notification of each transfer whose destination asks for one, in this
    session's transaction; the number added. Transfers whose target is `temporary` are left out (they
    are announced when renamed). Without a broker (`PDS_MQTT_URL`) nothing is announced."""
    if settings is None or not settings.mqtt_url:
        return 0
    messages = []
    for transfer in transfers:
        if temporary(transfer.target):
            continue
        destination = session.get(Destination, transfer.destination_name)
        if destination is None or not destination.mqtt_on_arrival or not destination.mqtt_topic:
            continue
        data_file = session.get(DataFile, transfer.data_file_id)
        if data_file is None or data_file.store_key is None:
            continue
        try:
            messages.append(render(settings, destination, arrival(settings, transfer, data_file)))
        except ValueError as exc:
            log.warning("arrival of %s on %s not announced: %s", transfer.target, destination.name, exc)
    outbox.add_notifications(session, messages)
    return len(messages)


def arrival(settings: Settings, transfer: DataTransfer, data_file: DataFile) -> Notification:
    """What the arrival notification says: the stored file, at its Data Portal URL."""
    assert data_file.id is not None
    url = portal_url(settings, transfer.destination_name, transfer.target)
    return Notification(
        name=transfer.target,
        size=data_file.size or 0,
        md5=data_file.md5 or "0" * 32,
        adler32=data_file.adler32,
        sha512=data_file.sha512,
        destination=transfer.destination_name,
        data_file_id=data_file.id,
        transfer_id=transfer.id,
        available_at=data_file.arrived_at or utcnow(),
        url=url,
        download_url=url,
        download_size=data_file.size or 0,
        event="arrival",
    )
