"""Product status: `POST /products/status` records that a product (a stream, type, time base and step) is
expected, started or completed, as a PRS line in the event log (what `ecpds -expected|-started|-completed`
does for OpenECPDS's top-level display) and as the product's row, which `GET /products` and the
monitor show (late ones flagged)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromQuery, JSONBody, Parameter
from pydantic import BaseModel, Field

from api.auth import request_access
from api.deps import database, reading
from catalog import outbox
from catalog.access import Permission, Role
from catalog.errors import InvalidInput
from catalog.events import EventLog, ProductStatusEvent
from catalog.models import utcnow
from catalog.products import ProductState, list_products, record_product_status, streams_of
from catalog.settings import Settings

#: The product statuses of the `pds product` command and their PRS status codes.
STATUS_CODES = {"expected": "SCHE", "started": "EXEC", "completed": "DONE"}


class ProductStatus(BaseModel):
    status: Literal["expected", "started", "completed"]
    stream: str = Field(min_length=1, max_length=100, description="the data stream, e.g. oper")
    type: str | None = Field(default=None, max_length=100, description="the product type, e.g. fc")
    time_base: str | None = Field(default=None, max_length=40, description="ISO 8601 time, or a base such as 00")
    time_step: str | None = Field(default=None, max_length=40)
    schedule_time: str | None = Field(default=None, max_length=40, description="ISO 8601: when its files are due")


def _time(name: str, value: str | None, *, required: bool = False) -> datetime | str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        if required:
            raise InvalidInput(f"{name} must be an ISO 8601 time such as 2026-11-24T06:00Z, not {value!r}") from None
        return value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ProductStatusLine(BaseModel):
    line: str


class ProductView(BaseModel):
    stream: str
    type: str
    time_base: str
    time_step: str
    status: str
    late: bool
    schedule_time: datetime | None
    expected_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime | None
    updated_by: str


@get("/products", permission=Permission.READ, sync_to_thread=True, tags=["products"])
def products(
    request: Request[Any, Any, Any],
    state: State,
    stream: FromQuery[str | None] = None,
    late: FromQuery[bool] = False,
    limit: Annotated[int, Parameter(ge=1, le=10_000)] = 200,
) -> list[ProductView]:
    """Products' latest statuses, the most recently updated first; `late=true`: due and not completed.
    A data user sees the products of the streams its destinations receive."""
    access = request_access(request)
    now = utcnow()
    with reading(state) as session:
        streams = None if access.has_role(Role.OPERATOR) else streams_of(session, access.granted)
        rows = list_products(session, stream=stream, late_only=late, limit=limit, now=now, streams=streams)
        return [
            ProductView(**row.model_dump(exclude={"id", "status"}), status=row.status.value, late=row.is_late(now))
            for row in rows
        ]


@post("/products/status", permission=Permission.OPERATE, sync_to_thread=True, status_code=201, tags=["products"])
def product_status(data: JSONBody[ProductStatus], request: Request[Any, Any, Any], state: State) -> ProductStatusLine:
    """Write the PRS line for a product's status to the event log (PDS_EVENT_LOG), record it as the
    product's latest status, and return the line."""
    schedule_time = _time("schedule_time", data.schedule_time, required=True)
    event = ProductStatusEvent(
        status_code=STATUS_CODES[data.status],
        data_stream=data.stream,
        time_step=data.time_step,
        time_base=_time("time_base", data.time_base),
        type=data.type,
        schedule_time=schedule_time if isinstance(schedule_time, datetime) else None,
        last_update=utcnow(),
    )
    settings: Settings = state.settings
    publisher = outbox.process_publisher("api")
    with database(state) as session:
        outbox.claim_on_add(session, publisher)  # the line is committed with the status it reports
        outbox.add_lines(session, [event])
        added = outbox.added(session)
        record_product_status(
            session,
            ProductState(data.status),
            data.stream,
            type=data.type,
            time_base=data.time_base,
            time_step=data.time_step,
            schedule_time=schedule_time if isinstance(schedule_time, datetime) else None,
            by=request.user.login,
            now=event.last_update,
        )
    with EventLog.open(settings.resolved_event_log()) as log:
        outbox.publish_lines(state.engine, log, publisher, added)
    return ProductStatusLine(line=event.render())
