"""What a mover needs to execute claimed transfers: the object, the host, the path at the site."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from sqlmodel import Session

from catalog.config import get_destination
from catalog.errors import FailTransfer
from catalog.models import DataFile, Host
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
    )
