"""The event lines a transfer's status change writes, built from the rows it changed, for the outbox.

They are built inside the transaction of the change (`catalog.transfers`), so what a line says is
what that transaction recorded, even if another mover changes the transfer a moment later.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from catalog import outbox
from catalog.events import err_from, uph_from
from catalog.models import DataFile, DataTransfer, Destination, Host


def _rows(
    session: Session, transfers: Sequence[DataTransfer]
) -> tuple[dict[int | None, DataFile], dict[str, Destination], dict[str, Host]]:
    """The data files, destinations and hosts of `transfers`, with a few queries for a whole batch."""
    file_ids = {t.data_file_id for t in transfers}
    names = {t.destination_name for t in transfers}
    host_names = {t.host_name for t in transfers if t.host_name}
    data_files = {f.id: f for f in session.exec(select(DataFile).where(col(DataFile.id).in_(file_ids)))}
    destinations = {d.name: d for d in session.exec(select(Destination).where(col(Destination.name).in_(names)))}
    hosts = {h.name: h for h in session.exec(select(Host).where(col(Host.name).in_(host_names)))}
    return data_files, destinations, hosts


def add_uph_lines(session: Session, done: Sequence[DataTransfer]) -> None:
    """The UPH line of each transfer just recorded Done (one delivered by a host)."""
    data_files, destinations, hosts = _rows(session, done)
    lines = []
    for transfer in done:
        data_file, destination = data_files.get(transfer.data_file_id), destinations.get(transfer.destination_name)
        host = hosts.get(transfer.host_name) if transfer.host_name else None
        if data_file is not None and destination is not None and host is not None:
            lines.append(uph_from(transfer, data_file, destination, host))
    outbox.add_lines(session, lines)


def add_err_line(session: Session, transfer: DataTransfer, message: str) -> None:
    """The ERR line of a failed attempt of `transfer`, as the failure left the row (host, times)."""
    data_files, destinations, hosts = _rows(session, [transfer])
    data_file, destination = data_files.get(transfer.data_file_id), destinations.get(transfer.destination_name)
    if data_file is None or destination is None:
        return
    host = hosts.get(transfer.host_name) if transfer.host_name else None
    outbox.add_lines(session, [err_from(transfer, data_file, destination, host, message=message)])
