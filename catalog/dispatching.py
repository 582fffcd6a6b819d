"""What a mover needs to execute claimed transfers: the object, the host, the path at the site."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.config import get_destination
from catalog.errors import FailTransfer, InvalidInput, NotFound
from catalog.models import DataFile, DataTransfer, Destination, Host, TransferHistory
from catalog.paths import render_directory
from catalog.transfers import active_hosts


class NotRetrievedYet(FailTransfer):
    """The data file has no content in the Data Store yet, but a source to fetch it from (registered
    without retrieval, or its retrieval failed and the transfer was requeued): the transfer waits for
    its retrieval (`catalog.on_demand.await_retrieval`) instead of failing."""


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
    proxy: Host | None = None
    """The proxy host whose store location this attempt reads from (a continental mover's claim)."""
    attempt: int | None = None
    """The number of the attempt the claim opened: the fencing token of the mover's writes."""


def interrupted_attempts(session: Session, transfer_ids: Sequence[int]) -> dict[int, datetime]:
    """For each transfer recovered right before this claim, when its interrupted attempt began.

    That is a history ending claim → interrupt → recover → claim: the earlier claim's time.
    """
    if not transfer_ids:
        return {}
    newest_first = (
        sa.func.row_number()
        .over(partition_by=col(TransferHistory.transfer_id), order_by=col(TransferHistory.id).desc())
        .label("newest_first")
    )
    recent = (
        select(TransferHistory.transfer_id, TransferHistory.action, TransferHistory.at, newest_first)
        .where(col(TransferHistory.transfer_id).in_(transfer_ids))
        .subquery()
    )
    rows = session.exec(
        select(recent.c.transfer_id, recent.c.action, recent.c.at)
        .where(recent.c.newest_first <= 4)
        .order_by(recent.c.transfer_id, recent.c.newest_first)
    )
    last_four: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for transfer_id, action, at in rows:
        last_four[transfer_id].append((action, at))
    return {
        transfer_id: rows[3][1]
        for transfer_id, rows in last_four.items()
        if [action for action, _ in rows] == ["claim", "recover", "interrupt", "claim"]
    }


def plans(session: Session, transfer_ids: Sequence[int]) -> tuple[list[DispatchPlan], dict[int, FailTransfer]]:
    """Resolve claimed transfers into plans, reading each destination and host once; the second
    value holds, by id, why a transfer cannot be executed at all (`NotRetrievedYet`: not yet)."""
    transfers = {t.id: t for t in session.exec(select(DataTransfer).where(col(DataTransfer.id).in_(transfer_ids)))}
    data_files = {
        f.id: f
        for f in session.exec(
            select(DataFile).where(col(DataFile.id).in_({t.data_file_id for t in transfers.values()}))
        )
    }
    interrupted = interrupted_attempts(session, list(transfer_ids))
    destinations: dict[str, tuple[Destination, list[Host]]] = {}
    proxies = {name: session.get(Host, name) for name in {t.proxy_host for t in transfers.values() if t.proxy_host}}
    planned: list[DispatchPlan] = []
    unplannable: dict[int, FailTransfer] = {}
    for transfer_id in transfer_ids:
        transfer = transfers.get(transfer_id)
        if transfer is None:
            raise NotFound(f"no data transfer {transfer_id}")
        name = transfer.destination_name
        if name not in destinations:
            destinations[name] = (get_destination(session, name), active_hosts(session, name))
        destination, hosts = destinations[name]
        data_file = data_files.get(transfer.data_file_id)
        if data_file is not None and data_file.store_key is None and _has_source(session, data_file):
            unplannable[transfer_id] = NotRetrievedYet(f"data file {data_file.id} is not fetched from its source yet")
            continue
        try:
            planned.append(_plan(transfer, data_file, destination, hosts))
        except FailTransfer as error:
            unplannable[transfer_id] = error
            continue
        if transfer_id in interrupted:
            planned[-1] = replace(planned[-1], interrupted_attempt_at=interrupted[transfer_id])
        if transfer.proxy_host:
            planned[-1] = replace(planned[-1], proxy=proxies.get(transfer.proxy_host))
    return planned, unplannable


def _has_source(session: Session, data_file: DataFile) -> bool:
    """Whether acquisition registered the data file: its content can be fetched from its source."""
    return data_file.id is not None and session.get(SourceFile, data_file.id) is not None


def _plan(
    transfer: DataTransfer, data_file: DataFile | None, destination: Destination, hosts: list[Host]
) -> DispatchPlan:
    if data_file is None or data_file.store_key is None or data_file.size is None or data_file.md5 is None:
        raise FailTransfer(f"data file {transfer.data_file_id} has no content in the Data Store")
    if not hosts:
        raise FailTransfer(f"destination {transfer.destination_name} has no active dissemination host")
    # the host the claim assigned to this attempt (a retry's, a failover's, or the first)
    host = next((h for h in hosts if h.name == transfer.host_name), hosts[0])
    try:
        directory = _directory(transfer, data_file, host)
    except InvalidInput as error:  # metadata that would lead outside the host's directory
        raise FailTransfer(f"cannot place the file at {host.name}: {error}") from None
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
        attempt=transfer.attempt,
    )


def _directory(transfer: DataTransfer, data_file: DataFile, host: Host) -> str:
    """The host's directory template rendered for this file (checked by `render_directory`)."""
    return render_directory(
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
