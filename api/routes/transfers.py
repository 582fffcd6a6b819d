"""Reading data transfers and data files (what lies within the caller's grants) and operating on
transfers (operators of their destination)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from api.auth import request_access
from api.deps import MAX_SECONDS, Id, OptionalId, database, reading
from catalog import operations
from catalog.access import Permission
from catalog.errors import InvalidInput, NotFound
from catalog.models import DataFile, DataFilePublic, DataTransfer, DataTransferPublic
from catalog.settings import Settings
from catalog.statuses import TransferStatus
from catalog.transfers import transfer_public


def _prefect_ui(state: State) -> str:
    """The Prefect UI, for the links of each attempt to its runs."""
    settings: Settings = state.settings
    return settings.resolved_prefect_ui_url()


@get("/transfers/{transfer_id:int}", permission=Permission.READ, sync_to_thread=True)
def read_transfer(transfer_id: Id, request: Request[Any, Any, Any], state: State) -> DataTransferPublic:
    """A transfer with its status and the history of every status change."""
    with reading(state) as session:
        request_access(request).transfer_destination(session, transfer_id)
        return transfer_public(session, transfer_id, _prefect_ui(state))


@get("/transfers", permission=Permission.READ, sync_to_thread=True)
def list_transfers(
    request: Request[Any, Any, Any],
    state: State,
    destination: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    data_file_id: OptionalId = None,
    limit: int = Parameter(default=100, ge=1, le=1000),
) -> list[DataTransferPublic]:
    """Transfers, newest first, filtered by destination, status or data file; only those of the
    destinations the caller is granted."""
    query = select(DataTransfer.id).order_by(col(DataTransfer.id).desc()).limit(limit)
    within = request_access(request).only_visible(DataTransfer.destination_name)
    if within is not None:
        query = query.where(within)
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
    with reading(state) as session:
        ui = _prefect_ui(state)
        return [transfer_public(session, tid, ui) for tid in session.exec(query) if tid is not None]


class Operation(BaseModel):
    """The body of an operation on a transfer; which fields count depends on the operation."""

    reason: str = Field(default="", max_length=1000)
    priority: int | None = Field(default=None, ge=0, le=99, description="for `priority`: 0 (first) … 99 (last)")
    seconds: int | None = Field(
        default=None, ge=1, le=MAX_SECONDS, description="for `extend`: seconds added to the lifetime"
    )


OPERATIONS = ("requeue", "stop", "hold", "release", "priority", "schedule-now", "extend")


def _operate(session: Session, transfer_id: int, name: str, body: Operation, by: str) -> None:
    if name == "requeue":
        operations.requeue(session, transfer_id, by=by, reason=body.reason)
    elif name == "stop":
        operations.stop(session, transfer_id, by=by, reason=body.reason)
    elif name == "hold":
        operations.hold(session, transfer_id, by=by)
    elif name == "release":
        operations.release(session, transfer_id, by=by)
    elif name == "schedule-now":
        operations.schedule_now(session, transfer_id, by=by)
    elif name == "priority":
        if body.priority is None:
            raise InvalidInput('give the new priority: {"priority": 0 … 99}')
        operations.set_priority(session, transfer_id, body.priority, by=by)
    elif name == "extend":
        if body.seconds is None:
            raise InvalidInput('give the extension: {"seconds": N}')
        operations.extend_lifetime(session, transfer_id, body.seconds, by=by)
    else:
        raise NotFound(f"no operation {name!r}; known: {', '.join(OPERATIONS)}")


@post(
    "/transfers/{transfer_id:int}/{operation:str}", permission=Permission.OPERATE, sync_to_thread=True, status_code=200
)
def operate(
    transfer_id: Id,
    operation: FromPath[str],
    request: Request[Any, Any, Any],
    state: State,
    data: JSONBody[Operation | None] = None,
) -> DataTransferPublic:
    """requeue, stop, hold, release, priority, schedule-now or extend one transfer; refused (409) when its
    status does not allow it. The change is in the transfer's history with the user's name."""
    with database(state) as session:
        access = request_access(request)
        access.require_operator(access.transfer_destination(session, transfer_id))
        _operate(session, transfer_id, operation, data or Operation(), request.user.login)
        return transfer_public(session, transfer_id, _prefect_ui(state))


@get("/datafiles/{data_file_id:int}", permission=Permission.READ, sync_to_thread=True)
def read_data_file(data_file_id: Id, request: Request[Any, Any, Any], state: State) -> DataFilePublic:
    with reading(state) as session:
        request_access(request).require_data_file(session, data_file_id)
        data_file = session.get(DataFile, data_file_id)
        if data_file is None:
            raise NotFound(f"no data file {data_file_id}")
        return DataFilePublic.model_validate(data_file, from_attributes=True)


transfers_router = Router(
    "/", route_handlers=[read_transfer, list_transfers, operate, read_data_file], tags=["transfers"]
)
