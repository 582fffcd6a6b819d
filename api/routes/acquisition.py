"""Acquisition: listing rules and discovery schedules of acquisition hosts, "run now", and the
asynchronous registration of files by group (`pds register`, `pds wait`)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.auth import admin_only
from api.deps import database
from catalog import acquisition
from catalog.acquisition import ListingRuleCreate, RegisteredFile


class Schedule(BaseModel):
    interval_seconds: int = Field(ge=0, description="seconds between discovery passes; 0: only when run by hand")


class FileToRegister(BaseModel):
    path: str = Field(description="where the file is on the source host")
    target: str | None = Field(default=None, description="path at the destination; default: the file name")
    size: int | None = Field(default=None, ge=0, description="when given, a retrieval of another size fails")


class Registration(BaseModel):
    destination: str
    host: str = Field(description="the source host the movers fetch from")
    group: str
    files: list[FileToRegister] = Field(min_length=1)
    priority: int = Field(default=99, ge=0, le=99)
    standby: bool = False
    requeue_on_failure: bool = False


def _view(session: Session, host: str) -> dict[str, Any]:
    acquisition.acquisition_host(session, host)
    state = acquisition.acquisition_state(session, host)
    return {
        "host": host,
        "schedule": state.model_dump(mode="json", exclude={"host_name"}),
        "rules": [r.model_dump(mode="json") for r in acquisition.list_rules(session, host)],
    }


@get("/acquisition/{host:str}", sync_to_thread=True)
def read_acquisition(host: FromPath[str], state: State) -> dict[str, Any]:
    """An acquisition host's listing rules, discovery schedule and last pass."""
    with database(state) as session:
        return _view(session, host)


@post("/acquisition/{host:str}/rules", guards=[admin_only], sync_to_thread=True)
def add_rule(host: FromPath[str], data: JSONBody[ListingRuleCreate], state: State) -> dict[str, Any]:
    """Add a listing rule (the host is attached to the rule's destination as an acquisition host)."""
    with database(state) as session:
        acquisition.add_rule(session, host, data)
        return _view(session, host)


@delete("/acquisition/{host:str}/rules/{rule_id:int}", guards=[admin_only], sync_to_thread=True, status_code=200)
def delete_rule(host: FromPath[str], rule_id: FromPath[int], state: State) -> dict[str, Any]:
    with database(state) as session:
        acquisition.delete_rule(session, host, rule_id)
        return _view(session, host)


@patch("/acquisition/{host:str}/schedule", guards=[admin_only], sync_to_thread=True)
def set_schedule(host: FromPath[str], data: JSONBody[Schedule], state: State) -> dict[str, Any]:
    with database(state) as session:
        acquisition.set_schedule(session, host, data.interval_seconds)
        return _view(session, host)


@post("/acquisition/{host:str}/run", guards=[admin_only], sync_to_thread=True, status_code=202)
def run_now(host: FromPath[str], state: State) -> dict[str, Any]:
    """Discover now: the acquisition scheduler starts the pass at its next look (within a second)."""
    with database(state) as session:
        acquisition.request_run(session, host)
        return _view(session, host)


@post("/register", sync_to_thread=True)
def register(data: JSONBody[Registration], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Register files for the movers to fetch from a source host; returns at once with their ids."""
    with database(state) as session:
        ids = acquisition.register_files(
            session,
            destination=data.destination,
            host=data.host,
            group=data.group,
            files=[RegisteredFile(f.path, f.target, f.size) for f in data.files],
            priority=data.priority,
            standby=data.standby,
            requeue_on_failure=data.requeue_on_failure,
            by=request.user.login,
        )
        return {"group": data.group, "data_file_ids": ids}


@get("/groups/{group:str}", sync_to_thread=True)
def read_group(group: FromPath[str], state: State) -> dict[str, Any]:
    """How far a group's retrieval is: total, retrieved, waiting, failed, complete."""
    with database(state) as session:
        return acquisition.group_progress(session, group)


acquisition_router = Router(
    "/",
    route_handlers=[read_acquisition, add_rule, delete_rule, set_schedule, run_now, register, read_group],
    tags=["acquisition"],
)
