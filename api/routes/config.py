"""Destinations and hosts: create (administrators) and read (any user)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.auth import admin_only
from api.deps import database
from blocks.registry import block_for, known_protocols
from catalog import config, operations
from catalog.models import Destination, DestinationCreate, DestinationState, Host, HostCreate, HostKind, HostPublic


class HostLink(BaseModel):
    host: str
    kind: HostKind = HostKind.DISSEMINATION
    rank: int | None = Field(default=None, ge=0, description="0 is the primary; default: after the others")


class AliasLink(BaseModel):
    alias: str
    pattern: str | None = Field(default=None, description="regular expression on the target; unset: every file")
    replacement: str | None = Field(default=None, description="rewrite the target: re.sub(pattern, replacement)")
    priority: int | None = Field(default=None, ge=0, le=99, description="unset: the pushed priority")
    delay_seconds: int = Field(default=0, ge=0)


class DestinationView(BaseModel):
    destination: dict[str, Any]
    hosts: dict[str, list[str]]
    aliases: list[dict[str, Any]] = Field(default_factory=list)
    state: dict[str, Any] = Field(
        default_factory=dict,
        description="The scheduler's memory: current_host (next_and_stay), failed_passes, hold_reason",
    )


def _view(session: Session, destination: Destination) -> DestinationView:
    hosts = {
        kind.value: [link.host_name for link in config.list_destination_hosts(session, destination.name, kind)]
        for kind in (HostKind.DISSEMINATION, HostKind.ACQUISITION, HostKind.PROXY)
    }
    remembered = session.get(DestinationState, destination.name)
    state = remembered.model_dump(mode="json", exclude={"name"}) if remembered else {}
    aliases = [
        a.model_dump(mode="json", exclude={"destination_name"}) for a in config.list_aliases(session, destination.name)
    ]
    return DestinationView(destination=destination.model_dump(mode="json"), hosts=hosts, aliases=aliases, state=state)


@post("/", guards=[admin_only], sync_to_thread=True)
def create_destination(data: JSONBody[DestinationCreate], state: State) -> DestinationView:
    """Create a destination (a portal bucket until a dissemination host is attached)."""
    with database(state) as session:
        return _view(session, config.create_destination(session, data))


@get("/", sync_to_thread=True)
def list_destinations(state: State) -> list[DestinationView]:
    with database(state) as session:
        return [_view(session, d) for d in config.list_destinations(session)]


@get("/{name:str}", sync_to_thread=True)
def read_destination(name: FromPath[str], state: State) -> DestinationView:
    with database(state) as session:
        return _view(session, config.get_destination(session, name))


@patch("/{name:str}", guards=[admin_only], sync_to_thread=True)
def update_destination(name: FromPath[str], data: JSONBody[dict[str, Any]], state: State) -> DestinationView:
    """Change settings (any field of a destination but its name); checked as at creation."""
    with database(state) as session:
        return _view(session, config.update_destination(session, name, data))


@post("/{name:str}/hold", guards=[admin_only], sync_to_thread=True, status_code=200)
def hold_destination(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> DestinationView:
    """Put the destination on hold: no transfer starts until it is restarted."""
    with database(state) as session:
        return _view(session, operations.hold_destination(session, name, by=request.user.login))


@post("/{name:str}/restart", guards=[admin_only], sync_to_thread=True, status_code=200)
def restart_destination(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> DestinationView:
    """Active again, from the primary host, with the count of failed passes cleared."""
    with database(state) as session:
        return _view(session, operations.restart_destination(session, name, by=request.user.login))


@post("/{name:str}/aliases", guards=[admin_only], sync_to_thread=True)
def add_alias(name: FromPath[str], data: JSONBody[AliasLink], state: State) -> DestinationView:
    """Queue the destination's transfers (all, or those matching `pattern`) to another destination too."""
    with database(state) as session:
        config.add_alias(
            session,
            name,
            data.alias,
            pattern=data.pattern,
            replacement=data.replacement,
            priority=data.priority,
            delay_seconds=data.delay_seconds,
        )
        return _view(session, config.get_destination(session, name))


@post("/{name:str}/hosts", guards=[admin_only], sync_to_thread=True)
def attach_host(name: FromPath[str], data: JSONBody[HostLink], state: State) -> DestinationView:
    """Attach a host; dissemination hosts are tried in rank order (0 = primary)."""
    with database(state) as session:
        config.attach_host(session, name, data.host, data.kind, data.rank)
        return _view(session, config.get_destination(session, name))


@delete("/{name:str}/hosts/{host:str}", guards=[admin_only], sync_to_thread=True, status_code=200)
def detach_host(
    name: FromPath[str], host: FromPath[str], state: State, kind: HostKind = HostKind.DISSEMINATION
) -> DestinationView:
    """Detach a host of `kind` (e.g. the proxy host, so the main movers serve the destination again)."""
    with database(state) as session:
        config.detach_host(session, name, host, kind)
        return _view(session, config.get_destination(session, name))


@post("/", guards=[admin_only], sync_to_thread=True)
def create_host(data: JSONBody[HostCreate], state: State) -> HostPublic:
    """Create a host; its password and `secret_*` options are never returned."""
    with database(state) as session:
        block_for(Host.model_validate(data.model_dump())).check()  # refuse what could never work, now
        return config.host_public(config.create_host(session, data, known_protocols=known_protocols()))


@get("/", sync_to_thread=True)
def list_hosts(state: State) -> list[HostPublic]:
    with database(state) as session:
        return [config.host_public(h) for h in config.list_hosts(session)]


@get("/{name:str}", sync_to_thread=True)
def read_host(name: FromPath[str], state: State) -> HostPublic:
    with database(state) as session:
        return config.host_public(config.get_host(session, name))


destinations_router = Router(
    "/destinations",
    route_handlers=[
        create_destination,
        list_destinations,
        read_destination,
        update_destination,
        hold_destination,
        restart_destination,
        attach_host,
        detach_host,
        add_alias,
    ],
    tags=["destinations"],
)
hosts_router = Router("/hosts", route_handlers=[create_host, list_hosts, read_host], tags=["hosts"])
