"""Submitting data files: a push registers the data file and its transfers, then the content arrives.

A push happens in three short steps so no database transaction is held while bytes stream in:
`begin_push` (validate everything, create the data file and Arriving transfers, aliases included),
the caller streams the content into the Data Store, then `finish_push` (Arriving → Queued) or
`abort_push` (Arriving → Failed, reason kept). Bad input is rejected before anything is written.

A push of a target the destination already has follows `if_exists`, as the `ecpds` command does:
`add` queues the new file beside the older transfers (what a portal upload over FTP, SFTP or S3 does);
`refuse` rejects it; `requeue` replaces the older file (which must exist) and `force` replaces it if it
exists. Replacing stops every older transfer of that data file, aliases included, so the destination
receives the new content once and the old one no more.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from catalog.errors import Conflict, InvalidInput, NotFound
from catalog.models import DataFile, DataTransfer, Destination, DestinationAlias, utcnow
from catalog.paths import check_path_value, clean_target
from catalog.statuses import TransferStatus
from catalog.store import StoredObject
from catalog.transfers import change_status, record_history


@dataclass
class PushRequest:
    """What a data provider says about a file it pushes."""

    destination: str
    target: str
    priority: int = 99
    standby: bool = False
    delay_seconds: int = 0
    lifetime_seconds: int | None = None
    stream: str | None = None
    data_type: str | None = None
    time_base: str | None = None
    time_step: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    if_exists: str = "add"


IF_EXISTS = ("add", "refuse", "requeue", "force")

MAX_SECONDS = 100 * 366 * 86400
"""The longest delay or lifetime of a push (a hundred years): an unbounded one overflows Python's
and the database's times."""

#: Older transfers a replacing push may stop: all but those moving bytes right now.
_BUSY = {TransferStatus.TRANSFERRING, TransferStatus.FETCHING, TransferStatus.ARRIVING}


def check_priority(value: Any) -> int:
    try:
        priority = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"priority must be an integer from 0 to 99, not {value!r}") from None
    if not 0 <= priority <= 99:
        raise InvalidInput(f"priority must be from 0 (first) to 99 (last), not {priority}")
    return priority


def validate(session: Session, request: PushRequest) -> Destination:
    """Check the whole request before anything is written; return the destination."""
    request.target = clean_target(request.target)
    request.priority = check_priority(request.priority)
    if not 0 <= request.delay_seconds <= MAX_SECONDS:
        raise InvalidInput(f"delay must be from 0 to {MAX_SECONDS} seconds, not {request.delay_seconds}")
    if request.lifetime_seconds is not None and not 0 < request.lifetime_seconds <= MAX_SECONDS:
        raise InvalidInput(f"lifetime must be from 1 to {MAX_SECONDS} seconds, not {request.lifetime_seconds}")
    # Metadata may become directories at a site (a host's `$stream/$type/...` template): checked now,
    # so a bad value is a 400 before any transfer exists rather than a failed or misplaced delivery.
    check_path_value("stream", request.stream)
    check_path_value("type", request.data_type)
    check_path_value("time base", request.time_base)
    check_path_value("time step", request.time_step)
    if request.if_exists not in IF_EXISTS:
        raise InvalidInput(f"if_exists must be one of {', '.join(IF_EXISTS)}, not {request.if_exists!r}")
    destination = session.get(Destination, request.destination)
    if destination is None:
        raise NotFound(f"no destination {request.destination!r}")
    return destination


def _older_transfers(session: Session, request: PushRequest) -> list[DataTransfer]:
    """Every live transfer of the data files the destination already holds under this target."""
    data_file_ids = select(DataTransfer.data_file_id).where(
        DataTransfer.destination_name == request.destination,
        DataTransfer.target == request.target,
        DataTransfer.status != TransferStatus.STOPPED,
    )
    return list(
        session.exec(
            select(DataTransfer)
            .where(col(DataTransfer.data_file_id).in_(data_file_ids), DataTransfer.status != TransferStatus.STOPPED)
            .order_by(col(DataTransfer.id))
        ).all()
    )


def _settle_duplicates(session: Session, request: PushRequest, *, by: str) -> None:
    """Apply `if_exists` to what the destination already holds under the target (see the module doc)."""
    if request.if_exists == "add":
        return
    older = _older_transfers(session, request)
    where = f"{request.destination}:{request.target}"
    if not older:
        if request.if_exists == "requeue":
            raise NotFound(f"nothing to requeue: {where} has no transfer (push without --requeue, or with --force)")
        return
    ids = ", ".join(str(t.id) for t in older)
    if request.if_exists == "refuse":
        raise Conflict(
            f"{where} already exists (data file {older[0].data_file_id}, transfers {ids}); "
            "push with --requeue or --force to replace it"
        )
    busy = [t for t in older if t.status in _BUSY]
    if busy:
        raise Conflict(
            f"{where} cannot be replaced now: transfer {busy[0].id} is {busy[0].status}; "
            "try again when it is over, or stop it first"
        )
    for transfer in older:
        assert transfer.id is not None
        change_status(
            session,
            transfer.id,
            "replace",
            TransferStatus.STOPPED,
            by=by,
            reason=f"replaced by a push ({request.if_exists})",
        )


class AliasPlan:
    """Every alias link, read once: which aliases apply to a target of a destination (many targets
    are planned against one read, as discovery registers thousands of files at a time)."""

    def __init__(self, session: Session) -> None:
        self.links: dict[str, list[DestinationAlias]] = {}
        for alias in session.exec(select(DestinationAlias)):
            self.links.setdefault(alias.destination_name, []).append(alias)

    def aliases(self, destination: str, target: str) -> list[DestinationAlias]:
        """Aliases of `destination` (and of its aliases) that apply to `target`, each destination once."""
        if destination not in self.links:
            return []
        seen, found, pending = {destination}, [], [destination]
        while pending:
            current = pending.pop()
            for alias in self.links.get(current, []):
                if alias.alias_name in seen or (alias.pattern and not re.search(alias.pattern, target)):
                    continue
                seen.add(alias.alias_name)
                found.append(alias)
                pending.append(alias.alias_name)
        return found


def _aliases(session: Session, destination: str, target: str) -> list[DestinationAlias]:
    """Aliases of `destination` (and of its aliases) that apply to `target`, each destination once."""
    return AliasPlan(session).aliases(destination, target)


def alias_target(alias: DestinationAlias, target: str) -> str:
    """The target at the alias: rewritten by the alias's pattern and replacement when it has them."""
    if not alias.pattern or alias.replacement is None:
        return target
    try:
        return clean_target(re.sub(alias.pattern, alias.replacement, target))
    except (re.error, InvalidInput) as exc:
        raise InvalidInput(
            f"alias {alias.alias_name} of {alias.destination_name} rewrites {target!r} into an invalid target: {exc}"
        ) from None


def begin_push(session: Session, request: PushRequest, *, by: str) -> tuple[DataFile, list[DataTransfer]]:
    """Register the data file and one Arriving transfer per destination (the target and its aliases)."""
    validate(session, request)
    _settle_duplicates(session, request, by=by)
    data_file = DataFile(
        name=posixpath.basename(request.target),
        stream=request.stream,
        data_type=request.data_type,
        time_base=request.time_base,
        time_step=request.time_step,
        meta=dict(request.meta),
    )
    session.add(data_file)
    session.flush()
    assert data_file.id is not None
    targets = [(request.destination, request.priority, request.target)] + [
        (a.alias_name, a.priority if a.priority is not None else request.priority, alias_target(a, request.target))
        for a in _aliases(session, request.destination, request.target)
    ]
    transfers = []
    for destination, priority, target in targets:
        transfer = DataTransfer(
            data_file_id=data_file.id,
            destination_name=destination,
            target=target,
            status=TransferStatus.ARRIVING,
            priority=priority,
        )
        session.add(transfer)
        session.flush()
        assert transfer.id is not None
        record_history(session, transfer.id, "create", None, TransferStatus.ARRIVING, by=by, reason="pushed")
        transfers.append(transfer)
    return data_file, transfers


def finish_push(
    session: Session, data_file_id: int, stored: StoredObject, request: PushRequest, *, by: str
) -> list[DataTransfer]:
    """The content is whole in the store: record it and queue every transfer (or hold it)."""
    data_file = session.get(DataFile, data_file_id)
    if data_file is None:
        raise NotFound(f"no data file {data_file_id}")
    now = utcnow()
    data_file.store_key, data_file.size = stored.key, stored.size
    data_file.adler32, data_file.md5, data_file.arrived_at = stored.adler32, stored.md5, now
    data_file.sha512 = stored.sha512
    session.add(data_file)
    delays = {request.destination: request.delay_seconds} | {
        a.alias_name: a.delay_seconds + request.delay_seconds
        for a in _aliases(session, request.destination, request.target)
    }
    queued = []
    for transfer in session.exec(select(DataTransfer).where(DataTransfer.data_file_id == data_file_id)).all():
        assert transfer.id is not None
        destination = session.get(Destination, transfer.destination_name)
        lifetime = request.lifetime_seconds or (destination.lifetime_seconds if destination else None)
        start = now + timedelta(seconds=delays.get(transfer.destination_name, 0))
        status = TransferStatus.STANDBY if request.standby else TransferStatus.QUEUED
        queued.append(
            change_status(
                session,
                transfer.id,
                "stored",
                status,
                by=by,
                reason=f"{stored.size} bytes stored, adler32 {stored.adler32}",
                queued_at=now,
                scheduled_at=start,
                expires_at=now + timedelta(seconds=lifetime) if lifetime else None,
            )
        )
    return queued


def abort_push(session: Session, data_file_id: int, reason: str, *, by: str) -> None:
    """The content never arrived whole: fail its transfers with the reason."""
    for transfer in session.exec(select(DataTransfer).where(DataTransfer.data_file_id == data_file_id)).all():
        assert transfer.id is not None
        if transfer.status == TransferStatus.ARRIVING:
            change_status(
                session, transfer.id, "arrival_failed", TransferStatus.FAILED, by=by, reason=reason, error=reason
            )
