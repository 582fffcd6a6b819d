"""Destinations and hosts: configured by administrators; operators hold and restart the destinations
they operate and see their hosts; data users see the destinations they are granted, without hosts."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.auth import request_access
from api.deps import database, reading
from blocks.registry import block_for, known_protocols
from catalog import config, destination_history, operations
from catalog.access import Access, Permission
from catalog.models import (
    Destination,
    DestinationCreate,
    DestinationHistoryPublic,
    DestinationState,
    Host,
    HostCreate,
    HostKind,
    HostPublic,
)


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


def _view(session: Session, destination: Destination, access: Access | None = None) -> DestinationView:
    """The destination as `access` may see it: hosts and aliases are operators' knowledge."""
    if access is not None and not access.operates(destination.name):
        remembered = session.get(DestinationState, destination.name)
        state = remembered.model_dump(mode="json", exclude={"name", "current_host"}) if remembered else {}
        return DestinationView(destination=destination.model_dump(mode="json"), hosts={}, state=state)
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


@post("/", permission=Permission.CONFIGURE, sync_to_thread=True)
def create_destination(
    data: JSONBody[DestinationCreate], request: Request[Any, Any, Any], state: State
) -> DestinationView:
    """Create a destination (a portal bucket until a dissemination host is attached)."""
    with database(state) as session:
        return _view(session, config.create_destination(session, data, by=request.user.login))


@get("/", permission=Permission.READ, sync_to_thread=True)
def list_destinations(request: Request[Any, Any, Any], state: State) -> list[DestinationView]:
    """The destinations the caller is granted (all, for administrators)."""
    access = request_access(request)
    with reading(state) as session:
        return [_view(session, d, access) for d in config.list_destinations(session) if access.sees(d.name)]


@get("/{name:str}", permission=Permission.READ, sync_to_thread=True)
def read_destination(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> DestinationView:
    access = request_access(request)
    access.require_visible(name)
    with reading(state) as session:
        return _view(session, config.get_destination(session, name), access)


@patch("/{name:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def update_destination(
    name: FromPath[str], data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State
) -> DestinationView:
    """Change settings (any field of a destination but its name); checked as at creation, and kept in
    its history with the old and new values."""
    with database(state) as session:
        return _view(session, config.update_destination(session, name, data, by=request.user.login))


@delete("/{name:str}", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=200)
def delete_destination(
    name: FromPath[str], request: Request[Any, Any, Any], state: State, force: FromQuery[bool] = False
) -> dict[str, Any]:
    """Remove a destination with its transfers and their history. Refused (409) while transfers move
    bytes to it; `force=true` first stops every transfer still waiting (queued, held, retrying…), so
    only the ones moving bytes can hold the delete back."""
    with database(state) as session:
        stopped = operations.stop_waiting_transfers(session, name, by=request.user.login) if force else 0
    with database(state) as session:
        removed = config.delete_destination(session, name)
    return {"destination": name, "transfers_removed": removed, "transfers_stopped": stopped}


@post("/{name:str}/hold", permission=Permission.OPERATE, sync_to_thread=True, status_code=200)
def hold_destination(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> DestinationView:
    """Put the destination on hold: no transfer starts until it is restarted."""
    request_access(request).require_operator(name)
    with database(state) as session:
        return _view(session, operations.hold_destination(session, name, by=request.user.login))


@post("/{name:str}/restart", permission=Permission.OPERATE, sync_to_thread=True, status_code=200)
def restart_destination(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> DestinationView:
    """Active again, from the primary host, with the count of failed passes cleared."""
    request_access(request).require_operator(name)
    with database(state) as session:
        return _view(session, operations.restart_destination(session, name, by=request.user.login))


@get("/{name:str}/history", permission=Permission.READ_HOSTS, sync_to_thread=True)
def read_destination_history(
    name: FromPath[str], request: Request[Any, Any, Any], state: State, limit: FromQuery[int] = 1000
) -> list[DestinationHistoryPublic]:
    """The destination's latest `limit` changes, oldest first: holds (by a user, or by the mover after
    failed passes), restarts, edits of its settings, hosts and aliases, each with who and when."""
    request_access(request).require_operator(name)
    with reading(state) as session:
        config.get_destination(session, name)
        return destination_history.history(session, name, limit=max(1, min(limit, 10_000)))


@post("/{name:str}/aliases", permission=Permission.CONFIGURE, sync_to_thread=True)
def add_alias(
    name: FromPath[str], data: JSONBody[AliasLink], request: Request[Any, Any, Any], state: State
) -> DestinationView:
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
            by=request.user.login,
        )
        return _view(session, config.get_destination(session, name))


@post("/{name:str}/hosts", permission=Permission.CONFIGURE, sync_to_thread=True)
def attach_host(
    name: FromPath[str], data: JSONBody[HostLink], request: Request[Any, Any, Any], state: State
) -> DestinationView:
    """Attach a host; dissemination hosts are tried in rank order (0 = primary)."""
    with database(state) as session:
        config.attach_host(session, name, data.host, data.kind, data.rank, by=request.user.login)
        return _view(session, config.get_destination(session, name))


@delete("/{name:str}/hosts/{host:str}", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=200)
def detach_host(
    name: FromPath[str],
    host: FromPath[str],
    request: Request[Any, Any, Any],
    state: State,
    kind: FromQuery[HostKind] = HostKind.DISSEMINATION,
) -> DestinationView:
    """Detach a host of `kind` (e.g. the proxy host, so the main movers serve the destination again)."""
    with database(state) as session:
        config.detach_host(session, name, host, kind, by=request.user.login)
        return _view(session, config.get_destination(session, name))


@post("/", permission=Permission.CONFIGURE, sync_to_thread=True)
def create_host(data: JSONBody[HostCreate], state: State) -> HostPublic:
    """Create a host; its password and `secret_*` options are never returned."""
    with database(state) as session:
        block_for(Host.model_validate(data.model_dump())).check()  # refuse what could never work, now
        return config.host_public(config.create_host(session, data, known_protocols=known_protocols()))


@get("/", permission=Permission.READ_HOSTS, sync_to_thread=True)
def list_hosts(request: Request[Any, Any, Any], state: State) -> list[HostPublic]:
    """Every host (administrators), or the hosts of the destinations the operator operates."""
    access = request_access(request)
    with reading(state) as session:
        reachable = access.hosts(session)
        return [config.host_public(h) for h in config.list_hosts(session) if reachable is None or h.name in reachable]


@patch("/{name:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def update_host(
    name: FromPath[str], data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State
) -> HostPublic:
    """Change a host: protocol, address, directory, login, comment, active, password or options
    (merged; a null value removes an option). Checked as at creation; credentials stay sealed and
    are never shown back. Its place in a destination's order: `POST /destinations/{name}/hosts`."""
    with database(state) as session:
        host = config.update_host(session, name, data, known_protocols=known_protocols(), by=request.user.login)
        block_for(host).check()  # refuse what could never work, before it is committed
        return config.host_public(host)


@delete("/{name:str}", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=204)
def delete_host(name: FromPath[str], state: State) -> None:
    """Remove a host and its links to destinations; refused (409) while transfers move bytes through
    it, or when files were registered from it (disable it instead)."""
    with database(state) as session:
        config.delete_host(session, name)


@get("/{name:str}", permission=Permission.READ_HOSTS, sync_to_thread=True)
def read_host(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> HostPublic:
    with reading(state) as session:
        request_access(request).require_host(session, name)
        return config.host_public(config.get_host(session, name))


destinations_router = Router(
    "/destinations",
    route_handlers=[
        create_destination,
        list_destinations,
        read_destination,
        update_destination,
        delete_destination,
        hold_destination,
        restart_destination,
        read_destination_history,
        attach_host,
        detach_host,
        add_alias,
    ],
    tags=["destinations"],
)
hosts_router = Router(
    "/hosts", route_handlers=[create_host, list_hosts, read_host, update_host, delete_host], tags=["hosts"]
)
