"""Acquisition: listing rules and discovery schedules of acquisition hosts, "run now", and the
asynchronous registration of files by group (`pds register`, `pds wait`)."""

from __future__ import annotations

import os
from typing import Any

from litestar import Request, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.auth import request_access
from api.deps import MAX_SECONDS, MAX_SIZE, Id, database, reading
from blocks.registry import block_for
from catalog import acquisition, config
from catalog.access import Permission
from catalog.acquisition import ListingRuleCreate, RegisteredFile
from catalog.errors import InvalidInput
from catalog.paths import inside, static_prefix


class Schedule(BaseModel):
    interval_seconds: int = Field(
        ge=0, le=MAX_SECONDS, description="seconds between discovery passes; 0: only when run by hand"
    )


class FileToRegister(BaseModel):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="on the source host, inside its directory (relative to it, or absolute)",
    )
    target: str | None = Field(
        default=None, max_length=1024, description="path at the destination; default: the file name"
    )
    size: int | None = Field(
        default=None, ge=0, le=MAX_SIZE, description="when given, a retrieval of another size fails"
    )


class Registration(BaseModel):
    destination: str = Field(max_length=64)
    host: str = Field(max_length=64, description="the source host the movers fetch from")
    group: str = Field(max_length=128)
    files: list[FileToRegister] = Field(min_length=1, max_length=100_000)
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


@get("/acquisition/{host:str}", permission=Permission.READ_HOSTS, sync_to_thread=True)
def read_acquisition(host: FromPath[str], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """An acquisition host's listing rules, discovery schedule and last pass."""
    with reading(state) as session:
        request_access(request).require_host(session, host)
        return _view(session, host)


@post("/acquisition/{host:str}/rules", permission=Permission.CONFIGURE, sync_to_thread=True)
def add_rule(host: FromPath[str], data: JSONBody[ListingRuleCreate], state: State) -> dict[str, Any]:
    """Add a listing rule (the host is attached to the rule's destination as an acquisition host)."""
    with database(state) as session:
        acquisition.add_rule(session, host, data)
        return _view(session, host)


@delete(
    "/acquisition/{host:str}/rules/{rule_id:int}", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=200
)
def delete_rule(host: FromPath[str], rule_id: Id, state: State) -> dict[str, Any]:
    with database(state) as session:
        acquisition.delete_rule(session, host, rule_id)
        return _view(session, host)


@patch("/acquisition/{host:str}/schedule", permission=Permission.CONFIGURE, sync_to_thread=True)
def set_schedule(host: FromPath[str], data: JSONBody[Schedule], state: State) -> dict[str, Any]:
    with database(state) as session:
        acquisition.set_schedule(session, host, data.interval_seconds)
        return _view(session, host)


@post("/acquisition/{host:str}/run", permission=Permission.OPERATE, sync_to_thread=True, status_code=202)
def run_now(host: FromPath[str], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Discover now: the acquisition scheduler starts the pass at its next look (within a second)."""
    with database(state) as session:
        request_access(request).require_host(session, host)
        acquisition.request_run(session, host)
        return _view(session, host)


@post("/register", permission=Permission.OPERATE, sync_to_thread=True)
def register(data: JSONBody[Registration], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Register files for the movers to fetch from a source host; returns at once with their ids.

    Needs operator rights at the destination and on the source host (a host attached to a
    destination the caller operates); every path must lie inside the host's directory."""
    access = request_access(request)
    access.require_operator(data.destination)
    with database(state) as session:
        access.require_host(session, data.host)
        source = config.get_host(session, data.host)
        block = block_for(source)
        root = block.join(static_prefix(source.directory))
        if source.protocol == "file":  # a link inside the directory must not lead out of it
            _refuse_links_out(root, [inside(root, f.path, what="source path") for f in data.files])
        ids = acquisition.register_files(
            session,
            destination=data.destination,
            host=data.host,
            source_root=root,
            group=data.group,
            files=[RegisteredFile(f.path, f.target, f.size) for f in data.files],
            priority=data.priority,
            standby=data.standby,
            requeue_on_failure=data.requeue_on_failure,
            by=request.user.login,
        )
        return {"group": data.group, "data_file_ids": ids}


def _refuse_links_out(root: str, paths: list[str]) -> None:
    """On a local directory, what a path resolves to (symbolic links followed) must stay inside it."""
    real_root = os.path.realpath(root)
    for path in paths:
        resolved = os.path.realpath(path if path.startswith("/") else os.path.join(root, path))
        if os.path.commonpath([real_root, resolved]) != real_root:
            raise InvalidInput(f"the source path {path!r} leads outside the host's directory {root!r}")


@get("/groups/{group:str}", permission=Permission.READ, sync_to_thread=True)
def read_group(group: FromPath[str], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """How far a group's retrieval is: total, retrieved, waiting, failed, complete (only the files
    of destinations the caller is granted)."""
    with reading(state) as session:
        return acquisition.group_progress(session, group, within=request_access(request).visible())


acquisition_router = Router(
    "/",
    route_handlers=[read_acquisition, add_rule, delete_rule, set_schedule, run_now, register, read_group],
    tags=["acquisition"],
)
