"""Reading data transfers and data files: status, history, errors."""

from __future__ import annotations

from litestar import Router, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, Parameter
from sqlmodel import col, select

from api.deps import database
from catalog.errors import InvalidInput, NotFound
from catalog.models import DataFile, DataFilePublic, DataTransfer, DataTransferPublic
from catalog.statuses import TransferStatus
from catalog.transfers import transfer_public


@get("/transfers/{transfer_id:int}", sync_to_thread=True)
def read_transfer(transfer_id: FromPath[int], state: State) -> DataTransferPublic:
    """A transfer with its status and the history of every status change."""
    with database(state) as session:
        return transfer_public(session, transfer_id)


@get("/transfers", sync_to_thread=True)
def list_transfers(
    state: State,
    destination: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    data_file_id: FromQuery[int | None] = None,
    limit: int = Parameter(default=100, ge=1, le=1000),
) -> list[DataTransferPublic]:
    """Transfers, newest first, filtered by destination, status or data file."""
    query = select(DataTransfer.id).order_by(col(DataTransfer.id).desc()).limit(limit)
    if destination:
        query = query.where(DataTransfer.destination_name == destination)
    if status:
        try:
            query = query.where(DataTransfer.status == TransferStatus(status).value)
        except ValueError:
            known = ", ".join(s.value for s in TransferStatus)
            raise InvalidInput(f"unknown status {status!r}; known: {known}") from None
    if data_file_id is not None:
        query = query.where(DataTransfer.data_file_id == data_file_id)
    with database(state) as session:
        return [transfer_public(session, tid) for tid in session.exec(query) if tid is not None]


@get("/datafiles/{data_file_id:int}", sync_to_thread=True)
def read_data_file(data_file_id: FromPath[int], state: State) -> DataFilePublic:
    with database(state) as session:
        data_file = session.get(DataFile, data_file_id)
        if data_file is None:
            raise NotFound(f"no data file {data_file_id}")
        return DataFilePublic.model_validate(data_file, from_attributes=True)


transfers_router = Router("/", route_handlers=[read_transfer, list_transfers, read_data_file], tags=["transfers"])
