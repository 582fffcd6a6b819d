"""Product status: `POST /products/status` records that a product (a stream, type, time base and step) is
expected, started or completed, as a PRS line in the event log (what `ecpds -expected|-started|-completed`
does for OpenECPDS's top-level display)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from litestar import post
from litestar.datastructures import State
from litestar.params import JSONBody
from pydantic import BaseModel, Field

from catalog.errors import InvalidInput
from catalog.events import EventLog, ProductStatusEvent
from catalog.models import utcnow
from catalog.settings import Settings

#: The product statuses of the `pds product` command and their PRS status codes.
STATUS_CODES = {"expected": "SCHE", "started": "EXEC", "completed": "DONE"}


class ProductStatus(BaseModel):
    status: Literal["expected", "started", "completed"]
    stream: str = Field(min_length=1, description="the data stream, e.g. oper")
    type: str | None = Field(default=None, description="the product type, e.g. fc")
    time_base: str | None = Field(default=None, description="ISO 8601 time, or a base such as 00")
    time_step: str | None = None
    schedule_time: str | None = Field(default=None, description="ISO 8601: when its files are due")


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


@post("/products/status", sync_to_thread=True, status_code=201, tags=["products"])
def product_status(data: JSONBody[ProductStatus], state: State) -> ProductStatusLine:
    """Write the PRS line for a product's status to the event log (PDS_EVENT_LOG) and return it."""
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
    with EventLog.open(settings.resolved_event_log()) as log:
        log.write(event)
    return ProductStatusLine(line=event.render())
