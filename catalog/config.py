"""Destinations and hosts: creating, reading and linking them."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, col, select

from catalog import destination_history
from catalog.acquisition import SourceFile
from catalog.compression import check_compression
from catalog.continental import check_proxy_options
from catalog.errors import Conflict, InvalidInput, NotFound
from catalog.models import (
    NAME_PATTERN,
    DataTransfer,
    Destination,
    DestinationAlias,
    DestinationBase,
    DestinationCreate,
    DestinationHost,
    Host,
    HostCreate,
    HostKind,
    HostPublic,
    TransferHistory,
)
from catalog.scheduling import parse_clock
from catalog.sealing import SECRET_OPTION_PREFIX, seal_host
from catalog.statuses import TransferStatus


def check_name(kind: str, name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(
            f"{kind} name {name!r} is invalid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_destination_settings(data: DestinationBase) -> None:
    """Refuse settings the scheduler or the notifier could not use, with the reason."""
    check_compression(data.compression)
    if bool(data.window_start) != bool(data.window_end):
        raise InvalidInput("an active time window needs both window_start and window_end (HH:MM, UTC)")
    for value in (data.window_start, data.window_end):
        if value:
            try:
                parse_clock(value)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
    if data.mqtt_payload not in ("pds", "wis2"):
        raise InvalidInput(f"mqtt_payload must be pds or wis2, not {data.mqtt_payload!r}")
    if data.mqtt_topic is not None and (not data.mqtt_topic or "+" in data.mqtt_topic or "#" in data.mqtt_topic):
        raise InvalidInput(f"mqtt_topic {data.mqtt_topic!r} must be a topic name, without the wildcards + and #")
    if data.mqtt_on_arrival and not data.mqtt_topic:
        raise InvalidInput("mqtt_on_arrival needs an mqtt_topic: the topic arrival notifications are published to")


def create_destination(
    session: Session, data: DestinationCreate, *, by: str = destination_history.SYSTEM
) -> Destination:
    check_name("destination", data.name)
    check_destination_settings(data)
    if session.get(Destination, data.name) is not None:
        raise Conflict(f"destination {data.name!r} already exists")
    destination = Destination.model_validate(data.model_dump())
    session.add(destination)
    session.flush()
    destination_history.record(session, destination.name, "create", by=by)
    return destination


def update_destination(
    session: Session, name: str, changes: dict[str, Any], *, by: str = destination_history.SYSTEM
) -> Destination:
    """Change a destination's settings (not its name); every change is checked as at creation and
    recorded in its history (old and new values)."""
    destination = get_destination(session, name)
    unknown = set(changes) - set(DestinationBase.model_fields) | ({"name"} & set(changes))
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} of a destination")
    try:
        updated = DestinationBase.model_validate(destination.model_dump() | changes)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid destination settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}"
        ) from None
    check_destination_settings(updated)
    before = destination.model_dump(mode="json")
    for key in changes:
        setattr(destination, key, getattr(updated, key))
    session.add(destination)
    session.flush()
    after = {key: value for key, value in destination.model_dump(mode="json").items() if key in changes}
    described = destination_history.describe_changes(before, after)
    if described:
        destination_history.record(session, name, "update", by=by, reason=described)
    return destination


def get_destination(session: Session, name: str) -> Destination:
    destination = session.get(Destination, name)
    if destination is None:
        raise NotFound(f"no destination {name!r}")
    return destination


def list_destinations(session: Session) -> list[Destination]:
    return list(session.exec(select(Destination).order_by(Destination.name)))


def create_host(session: Session, data: HostCreate, *, known_protocols: frozenset[str]) -> Host:
    check_name("host", data.name)
    if data.protocol not in known_protocols:
        raise InvalidInput(f"unknown protocol {data.protocol!r}; known: {', '.join(sorted(known_protocols))}")
    if session.get(Host, data.name) is not None:
        raise Conflict(f"host {data.name!r} already exists")
    host = Host.model_validate(data.model_dump())
    if host.kind == HostKind.PROXY:
        check_proxy_options(host)
    seal_host(host)  # encrypted at rest when PDS_HOST_SECRET_KEY is set
    session.add(host)
    session.flush()
    return host


def get_host(session: Session, name: str) -> Host:
    host = session.get(Host, name)
    if host is None:
        raise NotFound(f"no host {name!r}")
    return host


def list_hosts(session: Session) -> list[Host]:
    return list(session.exec(select(Host).order_by(Host.name)))


def host_public(host: Host) -> HostPublic:
    """A host as the API shows it: secrets replaced by whether they are set."""
    options: dict[str, Any] = {
        k: ("***" if k.startswith(SECRET_OPTION_PREFIX) else v) for k, v in (host.options or {}).items()
    }
    return HostPublic(
        **host.model_dump(exclude={"password", "options", "created_at"}),
        options=options,
        has_password=bool(host.password),
    )


def attach_host(
    session: Session,
    destination: str,
    host: str,
    kind: HostKind,
    rank: int | None = None,
    *,
    by: str = destination_history.SYSTEM,
) -> DestinationHost:
    """Add `host` to `destination`'s hosts of `kind`, last unless `rank` is given (0 = primary).

    A destination has at most one proxy host (its continental mover): a new one replaces the old.
    """
    kind = HostKind(kind)  # callers may give its value ("dissemination")
    get_destination(session, destination)
    get_host(session, host)
    existing = list_destination_hosts(session, destination, kind)
    replaced = []
    if kind == HostKind.PROXY:
        for link in existing:
            if link.host_name != host:
                session.delete(link)
                replaced.append(link.host_name)
        existing = [link for link in existing if link.host_name == host]
    if any(link.host_name == host for link in existing):
        raise Conflict(f"host {host!r} is already a {kind.value} host of {destination!r}")
    if rank is None:
        rank = len(existing)
    for link in existing:
        if link.rank >= rank:
            link.rank += 1
            session.add(link)
    link = DestinationHost(destination_name=destination, host_name=host, kind=kind, rank=rank)
    session.add(link)
    session.flush()
    reason = f"{kind.value} host {host} at rank {rank}" + "".join(f", replacing {old}" for old in replaced)
    destination_history.record(session, destination, "attach_host", by=by, reason=reason)
    return link


def detach_host(
    session: Session, destination: str, host: str, kind: HostKind, *, by: str = destination_history.SYSTEM
) -> None:
    """Remove `host` from `destination`'s hosts of `kind`; the others keep their order."""
    kind = HostKind(kind)
    link = session.get(DestinationHost, (destination, host, kind))
    if link is None:
        raise NotFound(f"host {host!r} is not a {kind.value} host of {destination!r}")
    session.delete(link)
    session.flush()
    destination_history.record(session, destination, "detach_host", by=by, reason=f"{kind.value} host {host}")


def list_destination_hosts(session: Session, destination: str, kind: HostKind) -> list[DestinationHost]:
    return list(
        session.exec(
            select(DestinationHost)
            .where(DestinationHost.destination_name == destination, DestinationHost.kind == kind)
            .order_by(col(DestinationHost.rank))
        )
    )


def dissemination_hosts(session: Session, destination: str) -> list[Host]:
    """The destination's dissemination hosts in order: the primary first, then the fallbacks."""
    return [
        get_host(session, link.host_name)
        for link in list_destination_hosts(session, destination, HostKind.DISSEMINATION)
    ]


def add_alias(
    session: Session,
    destination: str,
    alias: str,
    *,
    pattern: str | None = None,
    replacement: str | None = None,
    priority: int | None = None,
    delay_seconds: int = 0,
    by: str = destination_history.SYSTEM,
) -> DestinationAlias:
    """Queue every transfer of `destination` (or those whose target matches `pattern`) to `alias` too,
    optionally with its own priority, a delay, and the target rewritten (`re.sub(pattern, replacement)`)."""
    get_destination(session, destination)
    get_destination(session, alias)
    if alias == destination:
        raise InvalidInput("a destination cannot be its own alias")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidInput(f"alias pattern {pattern!r} is not a regular expression: {exc}") from None
    if replacement is not None and pattern is None:
        raise InvalidInput("a target replacement needs the pattern it replaces")
    if priority is not None and not 0 <= priority <= 99:
        raise InvalidInput(f"priority must be from 0 to 99, not {priority}")
    if delay_seconds < 0:
        raise InvalidInput("an alias delay must not be negative")
    if session.get(DestinationAlias, (destination, alias)) is not None:
        raise Conflict(f"{alias!r} is already an alias of {destination!r}")
    link = DestinationAlias(
        destination_name=destination,
        alias_name=alias,
        pattern=pattern,
        replacement=replacement,
        priority=priority,
        delay_seconds=delay_seconds,
    )
    session.add(link)
    session.flush()
    details = [
        f"{label} {value!r}"
        for label, value in (("pattern", pattern), ("replacement", replacement), ("priority", priority))
        if value is not None
    ] + ([f"delay {delay_seconds} s"] if delay_seconds else [])
    reason = f"alias {alias}" + (f" ({', '.join(details)})" if details else "")
    destination_history.record(session, destination, "add_alias", by=by, reason=reason)
    return link


def list_aliases(session: Session, destination: str) -> list[DestinationAlias]:
    return list(
        session.exec(
            select(DestinationAlias)
            .where(DestinationAlias.destination_name == destination)
            .order_by(col(DestinationAlias.alias_name))
        )
    )


# --- Changing and removing hosts and destinations ----------------------------------------------

#: Transfers moving bytes right now: nothing they depend on may be changed under them.
MOVING = (TransferStatus.TRANSFERRING, TransferStatus.FETCHING, TransferStatus.ARRIVING)

#: What an administrator may change of a host. Its name names it everywhere; its kind decides which
#: links it may have: for another name or kind, make a new host.
EDITABLE_HOST_FIELDS = frozenset(
    {"protocol", "address", "directory", "login", "comment", "active", "password", "options"}
)


def update_host(
    session: Session,
    name: str,
    changes: dict[str, Any],
    *,
    known_protocols: frozenset[str],
    by: str = destination_history.SYSTEM,
) -> Host:
    """Change a host's fields. `options` are merged: a key set to null is removed. A new password or
    `secret_*` option is sealed as at creation; sealed values that are not changed stay as they are.
    The change is recorded, with `by`, in the history of every destination the host serves (secrets
    as "changed", never their values)."""
    host = get_host(session, name)
    unknown = set(changes) - EDITABLE_HOST_FIELDS
    if unknown:
        editable = ", ".join(sorted(EDITABLE_HOST_FIELDS))
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} of a host (editable: {editable})")
    fields = host.model_dump(exclude={"created_at"})
    if "options" in changes:
        if not isinstance(changes["options"], dict):
            raise InvalidInput("options must be an object of KEY: value (null removes a key)")
        merged = dict(host.options or {})
        for key, value in changes["options"].items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        changes = changes | {"options": merged}
    try:
        updated = HostCreate.model_validate(fields | changes)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInput(f"invalid host settings: {error['loc'][0]}: {error['msg']}") from None
    if updated.protocol not in known_protocols:
        known = ", ".join(sorted(known_protocols))
        raise InvalidInput(f"unknown protocol {updated.protocol!r}; known: {known}")
    candidate = Host.model_validate(updated.model_dump())
    if candidate.kind == HostKind.PROXY:
        check_proxy_options(candidate)
    seal_host(candidate)
    before = host_public(host).model_dump(mode="json")
    for key in changes:
        setattr(host, key, getattr(candidate, key))
    session.add(host)
    session.flush()
    after = host_public(host).model_dump(mode="json")
    described = destination_history.describe_changes(before, {k: after[k] for k in after if k in changes})
    if "password" in changes:
        described = ", ".join(filter(None, [described, "password changed"]))
    if described:
        for link in session.exec(select(DestinationHost).where(DestinationHost.host_name == name)).all():
            destination_history.record(
                session, link.destination_name, "host-update", by=by, reason=f"{name}: {described}"
            )
    return host


def moving_transfers(session: Session, *, destination: str | None = None, host: str | None = None) -> list[int]:
    """Ids of the transfers moving bytes to `destination` or through `host` right now."""
    query = select(DataTransfer.id).where(col(DataTransfer.status).in_([s.value for s in MOVING]))
    if destination is not None:
        query = query.where(DataTransfer.destination_name == destination)
    if host is not None:
        query = query.where(DataTransfer.host_name == host)
    return [i for i in session.exec(query.order_by(col(DataTransfer.id))) if i is not None]


def _refuse_while_moving(what: str, ids: list[int]) -> None:
    if ids:
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        raise Conflict(
            f"{what} has {len(ids)} transfer(s) moving bytes (ids {shown}): stop them, or wait until they have ended"
        )


def delete_host(session: Session, name: str) -> None:
    """Remove a host and its links to destinations. Refused while transfers move bytes through it,
    and for a host files were registered from (their origin must stay known: disable it instead)."""
    get_host(session, name)
    _refuse_while_moving(f"host {name!r}", moving_transfers(session, host=name))
    sources = session.exec(select(sa.func.count()).select_from(SourceFile).where(SourceFile.host_name == name)).one()
    if sources:
        raise Conflict(
            f"host {name!r} is the source of {sources} registered data file(s); disable it instead (active=false)"
        )
    for link in session.exec(select(DestinationHost).where(DestinationHost.host_name == name)).all():
        session.delete(link)
    session.flush()
    session.delete(session.get(Host, name))
    session.flush()


def delete_destination(session: Session, name: str) -> int:
    """Remove a destination with its transfers and their history; returns how many transfers went.

    Refused while any of its transfers moves bytes. Data files that no other destination has are
    left for the purge, which removes them and their content once their retention has passed."""
    get_destination(session, name)
    _refuse_while_moving(f"destination {name!r}", moving_transfers(session, destination=name))
    ids = [i for i in session.exec(select(DataTransfer.id).where(DataTransfer.destination_name == name)) if i]
    for start in range(0, len(ids), 1000):  # in batches: a destination may hold millions of transfers
        batch = ids[start : start + 1000]
        session.execute(sa.delete(TransferHistory).where(col(TransferHistory.transfer_id).in_(batch)))
        session.execute(sa.delete(DataTransfer).where(col(DataTransfer.id).in_(batch)))
    session.flush()
    session.delete(session.get(Destination, name))
    session.flush()
    return len(ids)
