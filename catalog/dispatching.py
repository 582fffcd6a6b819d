"""What a mover needs to execute claimed transfers: the object, the host, the path at the site."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from catalog.config import get_destination
from catalog.errors import FailTransfer
from catalog.models import DataFile, Host, TransferHistory
from catalog.paths import render_directory
from catalog.transfers import active_hosts, get_transfer


@dataclass(frozen=True)
class DispatchPlan:
    transfer_id: int
    destination: str
    store_key: str
    size: int
    md5: str
    host: Host
    remote_path: str
    """Where the file lands, relative to the host's base path: rendered directory + target."""
    compression: str | None = None
    interrupted_attempt_at: datetime | None = None
    """When the attempt that a mover's crash interrupted began (None unless this attempt follows a
    recovery): a file at the site of the right size written since then is that attempt's work."""


def interrupted_attempt_at(session: Session, transfer_id: int) -> datetime | None:
    """The start of the interrupted attempt, if the transfer was recovered right before this claim."""
    rows = list(
        session.exec(
            select(TransferHistory)
            .where(TransferHistory.transfer_id == transfer_id)
            .order_by(col(TransferHistory.id).desc())
            .limit(4)
        )
    )
    actions = [row.action for row in rows]
    if actions[:3] == ["claim", "recover", "interrupt"] and len(rows) == 4 and rows[3].action == "claim":
        return rows[3].at
    return None


def plan(session: Session, transfer_id: int) -> DispatchPlan:
    """Resolve a claimed transfer into a plan; FailTransfer when it cannot be executed at all."""
    transfer = get_transfer(session, transfer_id)
    data_file = session.get(DataFile, transfer.data_file_id)
    if data_file is None or data_file.store_key is None or data_file.size is None or data_file.md5 is None:
        raise FailTransfer(f"data file {transfer.data_file_id} has no content in the Data Store")
    destination = get_destination(session, transfer.destination_name)
    hosts = active_hosts(session, transfer.destination_name)
    if not hosts:
        raise FailTransfer(f"destination {transfer.destination_name} has no active dissemination host")
    # the host the claim assigned to this attempt (a retry's, a failover's, or the first)
    host = next((h for h in hosts if h.name == transfer.host_name), hosts[0])
    directory = render_directory(
        host.directory,
        {
            "destination": transfer.destination_name,
            "target": posixpath.dirname(transfer.target),
            "name": data_file.name,
            "stream": data_file.stream,
            "type": data_file.data_type,
            "time_base": data_file.time_base,
            "time_step": data_file.time_step,
        },
        when=data_file.arrived_at or transfer.queued_at,
    )
    assert transfer.id is not None
    return DispatchPlan(
        transfer_id=transfer.id,
        destination=transfer.destination_name,
        store_key=data_file.store_key,
        size=data_file.size,
        md5=data_file.md5,
        host=host,
        remote_path=posixpath.join(directory, transfer.target) if directory else transfer.target,
        compression=destination.compression,
        interrupted_attempt_at=interrupted_attempt_at(session, transfer_id),
    )
