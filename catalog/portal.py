"""The Data Portal's virtual file tree: one model every protocol front end (HTTPS, S3, FTP, SFTP) calls.

A data user sees `/<destination>/<target path>` for each destination it may reach (directly or through
a policy). The files of a destination are its data transfers that wait to be pulled or were delivered
(Queued, Requeued, StandBy, Transferring, Done), the newest per target; directories are the prefixes of
their targets, plus empty ones a user made. Nothing is a real directory on disk, so no path can escape:
a path is parsed into (destination, target) and every segment is checked, whatever the protocol.

- A download streams the data file from the Data Store; a whole one marks the transfer Done.
- A file registered without retrieval (`catalog.on_demand`) is listed before its content is fetched;
  reading it asks for its retrieval (once) and answers NotYetAvailable until the content is stored
  (FTP and SFTP wait up to `fetch_wait_seconds` first).
- An upload is a push (`catalog.submission`): a data file and its transfers in the destination and its
  aliases, queued for dissemination when the destination has hosts. A name matching a temporary pattern
  (`.*`, `*.tmp`) is held StandBy until it is renamed to its final name.
- Each upload and download writes an INH event line and counts against the user's rolling quotas.
- A completed upload (or, under a temporary name, its rename to the final name) is announced over
  MQTT when its destination asks for it (`catalog.arrivals`).

Front ends translate the errors: NotFound, AccessDenied, InvalidInput, Conflict, QuotaExceeded,
NotYetAvailable. Paths
and entries are in `catalog.portal_paths`, downloads and uploads in progress in `catalog.portal_streams`.
"""

from __future__ import annotations

import dataclasses
import posixpath
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from catalog import outbox
from catalog.arrivals import announce_arrivals
from catalog.data_users import account, reachable_destinations
from catalog.database import make_engine, session_scope
from catalog.errors import AccessDenied, Conflict, InvalidInput, NotFound, NotYetAvailable, QuotaExceeded
from catalog.events import EventLog, inh_from
from catalog.models import DataFile, DataTransfer, DataUser, Destination, DestinationAlias, utcnow
from catalog.on_demand import RETRY_AFTER_SECONDS, is_pending, request_fetch, visible
from catalog.paths import clean_target
from catalog.portal_keys import KeyPage, list_keys
from catalog.portal_models import ALL_OPERATIONS, Operation, PortalAccount, PortalDirectory, PortalUsage
from catalog.portal_paths import Entry, PortalUser, TreePath, entry_of, is_temporary, parse_path
from catalog.portal_streams import Download, Upload
from catalog.proxy import delete_stale_copies_on_commit
from catalog.settings import Settings
from catalog.shared_state import SharedConnectionSlots
from catalog.statuses import TransferStatus
from catalog.store import DataStore
from catalog.submission import PushRequest, alias_target, begin_push
from catalog.transfers import change_status, record_history

S = TransferStatus

#: Transfers a data user sees as files (and those of on-demand files not fetched yet: `catalog.on_demand`).
VISIBLE: frozenset[TransferStatus] = frozenset({S.QUEUED, S.REQUEUED, S.STANDBY, S.TRANSFERRING, S.DONE})

#: Visible transfers that cannot be stopped now: being sent, or being fetched.
BUSY: frozenset[TransferStatus] = frozenset({S.TRANSFERRING, S.FETCHING})


class ConnectionLimiter:
    """Sessions (or requests) each data user has open, against its max_connections.

    Counted in this process on SQLite (one API process, one FTP and one SFTP server: each counts its
    own), and across every process on PostgreSQL (`shared`: advisory locks, see catalog.shared_state),
    where the FTP, SFTP and HTTP front ends and the API replicas share one limit per user.
    """

    def __init__(self, shared: SharedConnectionSlots | None = None) -> None:
        self._open: dict[str, int] = {}
        self._limited: dict[str, int] = {}  # of _open, those holding a shared slot
        self._lock = threading.Lock()
        self.shared = shared

    def acquire(self, login: str, limit: int | None) -> None:
        refused = QuotaExceeded(f"data user {login} already has {limit} connection(s) open", retry_after=5)
        if self.shared is not None and limit is not None:
            if not self.shared.take(login, limit):
                raise refused
            with self._lock:
                self._limited[login] = self._limited.get(login, 0) + 1
                self._open[login] = self._open.get(login, 0) + 1
            return
        with self._lock:
            if limit is not None and self._open.get(login, 0) >= limit:
                raise refused
            self._open[login] = self._open.get(login, 0) + 1

    def release(self, login: str) -> None:
        with self._lock:
            self._open[login] -= 1
            holds_slot = self._limited.get(login, 0) > 0
            if holds_slot:
                self._limited[login] -= 1
        if holds_slot and self.shared is not None:
            self.shared.give_back(login)

    @contextmanager
    def hold(self, login: str, limit: int | None) -> Iterator[None]:
        self.acquire(login, limit)
        try:
            yield
        finally:
            self.release(login)


class Portal:
    """The tree for every front end: resolve, check, list, read, upload, delete, rename, quotas."""

    def __init__(
        self,
        engine: sa.Engine,
        store: DataStore,
        events: EventLog | None = None,
        *,
        temporary_patterns: list[str] | None = None,
        server_name: str = "pds",
        public_url: str | None = None,
        upload_idle_seconds: float = 600.0,
        fetch_wait_seconds: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        self.engine = engine
        # The broker and public URL of arrival notifications; None: no file is announced.
        self.settings = settings
        # FTP and SFTP wait this long for an on-demand file's content before they answer "retry later".
        self.fetch_wait_seconds = fetch_wait_seconds
        # An upload silent this long is failed by the movers; uploads record progress well within it.
        self.upload_idle_seconds = upload_idle_seconds
        # Base URL of the proxy's asset hrefs; None: uploads are not published in the STAC inventory.
        self.public_url = public_url
        self.store = store
        self.events = events or EventLog(None)
        self.temporary_patterns = (
            temporary_patterns if temporary_patterns is not None else [".*", "*.tmp", "*.part", "*.partial"]
        )
        self.server_name = server_name
        shared = SharedConnectionSlots(engine) if engine.dialect.name == "postgresql" else None
        self.connections = ConnectionLimiter(shared)
        self.publisher = outbox.process_publisher("portal")

    # --- Who -------------------------------------------------------------------------------------

    def user(self, login: str) -> PortalUser:
        """The user `login` (already authenticated by the front end) with its reach."""
        with session_scope(self.engine) as session:
            found = session.get(DataUser, login)
            if found is None or not found.active:
                raise AccessDenied(f"data user {login} is unknown or disabled")
            acc = account(session, login)
            if found.is_admin:
                names = session.exec(select(Destination.name)).all()
                reach = {n: ALL_OPERATIONS for n in names}
            else:
                reach = reachable_destinations(session, login)
            return PortalUser(login, found.is_admin, reach, acc.description, acc.country_code)

    def max_connections(self, login: str) -> int | None:
        with session_scope(self.engine) as session:
            return account(session, login).max_connections

    def _destination(self, user: PortalUser, path: TreePath, operation: Operation | None) -> str:
        """The path's destination if the user reaches it (and may do `operation` there)."""
        name = path.destination
        if name is None:
            raise InvalidInput("the root holds only destinations")
        ops = user.reach.get(name)
        if ops is None:
            # Another user's destination looks exactly like one that does not exist.
            raise NotFound(f"no destination {name!r}")
        if operation is not None and operation not in ops:
            raise AccessDenied(f"data user {user.login} may not {operation.value} at {name}")
        return name

    # --- Reading the tree ------------------------------------------------------------------------

    def _visible(self, destination: str) -> Any:
        return select(DataTransfer, DataFile).where(
            DataTransfer.destination_name == destination,
            visible(VISIBLE),
            DataTransfer.data_file_id == DataFile.id,
        )

    def _file(self, session: Session, destination: str, target: str) -> tuple[DataTransfer, DataFile] | None:
        row = session.exec(
            self._visible(destination).where(DataTransfer.target == target).order_by(col(DataTransfer.id).desc())
        ).first()
        return (row[0], row[1]) if row else None

    def _is_dir(self, session: Session, destination: str, target: str) -> bool:
        if not target:
            return True
        under = session.exec(
            self._visible(destination).where(col(DataTransfer.target).startswith(target + "/", autoescape=True))
        ).first()
        if under is not None:
            return True
        made = session.exec(
            select(PortalDirectory).where(
                PortalDirectory.destination_name == destination,
                sa.or_(
                    col(PortalDirectory.path) == target,
                    col(PortalDirectory.path).startswith(target + "/", autoescape=True),
                ),
            )
        ).first()
        return made is not None

    def stat(self, user: PortalUser, path: str) -> Entry:
        tree = parse_path(path)
        if tree.destination is None:
            return Entry("/", True)
        destination = self._destination(user, tree, None)
        with session_scope(self.engine) as session:
            found = self._file(session, destination, tree.target) if tree.target else None
            if found is not None:
                return entry_of(posixpath.basename(tree.target), *found)
            if self._is_dir(session, destination, tree.target):
                return Entry(posixpath.basename(tree.target) or destination, True)
        raise NotFound(f"no such file or directory: {tree}")

    def list(self, user: PortalUser, path: str) -> list[Entry]:
        """The entries of a directory, sorted by name (a file path lists that one file)."""
        tree = parse_path(path)
        if tree.destination is None:
            return [Entry(name, True) for name in sorted(user.reach)]
        destination = self._destination(user, tree, Operation.DIR)
        prefix = tree.target + "/" if tree.target else ""
        entries: dict[str, Entry] = {}
        with session_scope(self.engine) as session:
            # Page by page in key order, each sub-directory skipped in one read (not file by file).
            after = ""
            while True:
                page = list_keys(session, destination, VISIBLE, prefix=prefix, delimiter="/", after=after, limit=1000)
                entries.update((key[len(prefix) :], entry) for key, entry in page.files)
                entries.update((d[len(prefix) : -1], Entry(d[len(prefix) : -1], True)) for d in page.prefixes)
                if not page.truncated:
                    break
                after = page.next_marker
            made = session.exec(select(PortalDirectory).where(PortalDirectory.destination_name == destination))
            for directory in made:
                if directory.path.startswith(prefix) and directory.path != tree.target:
                    entries.setdefault(directory.path[len(prefix) :].split("/")[0], Entry("", True))
            if not entries and tree.target:
                found = self._file(session, destination, tree.target)
                if found is not None:
                    return [entry_of(posixpath.basename(tree.target), *found)]
                if not self._is_dir(session, destination, tree.target):
                    raise NotFound(f"no such file or directory: {tree}")
        return [Entry(name, e.is_dir, e.size, e.mtime, e.md5, e.pending) for name, e in sorted(entries.items())]

    def list_keys(
        self, user: PortalUser, destination: str, *, prefix: str = "", delimiter: str = "", after: str = "", limit: int
    ) -> KeyPage:
        """One page of the destination's files as object stores list them (`catalog.portal_keys`)."""
        self._destination(user, TreePath(destination, ""), Operation.DIR)
        with session_scope(self.engine) as session:
            return list_keys(
                session, destination, VISIBLE, prefix=prefix, delimiter=delimiter, after=after, limit=limit
            )

    # --- Downloads -------------------------------------------------------------------------------

    def open_read(
        self,
        user: PortalUser,
        path: str,
        *,
        protocol: str,
        client_address: str | None = None,
        start: int = 0,
        length: int | None = None,
        wait: float = 0.0,
    ) -> Download:
        """A download of the file; an on-demand file not fetched yet is asked for and waited for up to
        `wait` seconds, then NotYetAvailable."""
        tree = parse_path(path)
        transfer, data_file = self._readable(user, tree, quota=True)
        transfer, data_file = self._content(user, tree, transfer, data_file, protocol=protocol, wait=wait)
        return Download(self, user, transfer, data_file, protocol, client_address, start, length)

    def require_content(self, user: PortalUser, path: str, *, protocol: str, wait: float = 0.0) -> Entry:
        """The file's entry once its content is in the Data Store (what a HEAD answers): an on-demand
        file not fetched yet is asked for, as a read would, and NotYetAvailable after `wait` seconds."""
        tree = parse_path(path)
        transfer, data_file = self._readable(user, tree, quota=False)
        transfer, data_file = self._content(user, tree, transfer, data_file, protocol=protocol, wait=wait)
        return entry_of(posixpath.basename(tree.target), transfer, data_file)

    def _readable(self, user: PortalUser, tree: TreePath, *, quota: bool) -> tuple[DataTransfer, DataFile]:
        destination = self._destination(user, tree, Operation.GET)
        with session_scope(self.engine) as session:
            found = self._file(session, destination, tree.target) if tree.target else None
            if found is None:
                if self._is_dir(session, destination, tree.target):
                    raise InvalidInput(f"{tree} is a directory")
                raise NotFound(f"no such file or directory: {tree}")
            if quota:
                self._check_quota(session, user.login, "download")
        return found

    def _content(
        self,
        user: PortalUser,
        tree: TreePath,
        transfer: DataTransfer,
        data_file: DataFile,
        *,
        protocol: str,
        wait: float,
    ) -> tuple[DataTransfer, DataFile]:
        """The file once its content is stored: an on-demand file is asked for (once, whoever reads it
        first) and polled for until `wait` seconds have passed."""
        if data_file.store_key is not None:
            return transfer, data_file
        deadline = time.monotonic() + wait
        with session_scope(self.engine) as session:
            if not is_pending(session, transfer):
                raise NotFound(f"{tree} has no content yet")
            assert data_file.id is not None
            request_fetch(session, data_file.id, by=user.login, reason=f"read over {protocol}: fetched on first use")
        while True:
            with session_scope(self.engine) as session:
                found = self._file(session, transfer.destination_name, transfer.target)
            if found is None:
                raise NotFound(f"no such file: {tree} (its retrieval failed or it was removed)")
            if found[1].store_key is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotYetAvailable(
                    f"{tree} is being fetched from its source; try again in {RETRY_AFTER_SECONDS} s",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            time.sleep(min(0.25, left))

    # --- Uploads ---------------------------------------------------------------------------------

    def begin_upload(
        self,
        user: PortalUser,
        path: str,
        *,
        protocol: str,
        client_address: str | None = None,
        options: PushRequest | None = None,
    ) -> Upload:
        """Register the data file and its Arriving transfers; the caller writes chunks, then commits.

        `options` carries what a provider may say with a push over HTTPS (priority, delay, metadata);
        its destination and target are the path's.
        """
        tree = parse_path(path)
        destination = self._destination(user, tree, Operation.PUT)
        target = clean_target(tree.target) if tree.target else ""
        if not target:
            raise InvalidInput(f"{tree} is a directory, not a file name")
        request = dataclasses.replace(options or PushRequest("", ""), destination=destination, target=target)
        request.standby = request.standby or is_temporary(target, self.temporary_patterns)
        with session_scope(self.engine) as session:
            remaining = self._check_quota(session, user.login, "upload")
            if self._is_dir(session, destination, target):
                raise Conflict(f"{tree} is a directory")
            data_file, _ = begin_push(session, request, by=user.login)
            assert data_file.id is not None
            data_file_id = data_file.id
        return Upload(self, user, request, data_file_id, protocol, client_address, remaining)

    def is_temporary(self, target: str) -> bool:
        """Whether `target` is a temporary name (an upload that is not finished until renamed)."""
        return is_temporary(target, self.temporary_patterns)

    def check_upload(self, user: PortalUser, path: str) -> None:
        """Whether `begin_upload` would be allowed now (right to put, quota left), registering nothing."""
        tree = parse_path(path)
        destination = self._destination(user, tree, Operation.PUT)
        if not tree.target:
            raise InvalidInput(f"{tree} is a directory, not a file name")
        clean_target(tree.target)
        with session_scope(self.engine) as session:
            self._check_quota(session, user.login, "upload")
            if session.get(Destination, destination) is None:
                raise NotFound(f"no destination {destination!r}")

    # --- Changing the tree -----------------------------------------------------------------------

    def delete(self, user: PortalUser, path: str) -> None:
        """The file disappears from the tree: every transfer of its target is Stopped, the older uploads
        it hid too, so no earlier version shows again (the data files stay for others)."""
        tree = parse_path(path)
        destination = self._destination(user, tree, Operation.DELETE)
        with session_scope(self.engine) as session:
            versions = self._versions(session, destination, tree.target) if tree.target else []
            if not versions:
                raise NotFound(f"no such file: {tree}")
            busy = [t for t in versions if t.status in BUSY]
            if busy:
                raise Conflict(f"{tree} is being disseminated or fetched; try again when it is done")
            self._stop(session, versions, by=user.login, reason="deleted in the portal")

    def check(self, user: PortalUser, destination: str, operation: Operation) -> None:
        """Whether the user may do `operation` at `destination`: NotFound when the destination is out
        of its reach (as if it did not exist), AccessDenied when the operation is not granted there."""
        self._destination(user, TreePath(destination, ""), operation)

    def _versions(self, session: Session, destination: str, target: str) -> Sequence[DataTransfer]:
        """Every visible transfer of the target, newest first (the first is the file the user sees)."""
        query = self._visible(destination).where(DataTransfer.target == target).order_by(col(DataTransfer.id).desc())
        return [row[0] for row in session.exec(query)]

    @staticmethod
    def _stop(session: Session, transfers: Sequence[DataTransfer], *, by: str, reason: str) -> None:
        for transfer in transfers:
            assert transfer.id is not None
            change_status(session, transfer.id, "delete", S.STOPPED, by=by, reason=reason)

    def mkdir(self, user: PortalUser, path: str) -> None:
        tree = parse_path(path)
        destination = self._destination(user, tree, Operation.MKDIR)
        target = clean_target(tree.target) if tree.target else ""
        if not target:
            raise Conflict(f"{tree} exists")
        with session_scope(self.engine) as session:
            if self._file(session, destination, target) is not None or self._is_dir(session, destination, target):
                raise Conflict(f"{tree} exists")
            session.add(PortalDirectory(destination_name=destination, path=target))

    def rmdir(self, user: PortalUser, path: str) -> None:
        tree = parse_path(path)
        destination = self._destination(user, tree, Operation.RMDIR)
        if not tree.target:
            raise AccessDenied("a destination cannot be removed through the portal")
        with session_scope(self.engine) as session:
            if self._file(session, destination, tree.target) is not None:
                raise InvalidInput(f"{tree} is a file")
            nonempty = session.exec(
                self._visible(destination).where(
                    col(DataTransfer.target).startswith(tree.target + "/", autoescape=True)
                )
            ).first()
            if nonempty is not None:
                raise Conflict(f"directory {tree} is not empty")
            made = session.exec(
                select(PortalDirectory).where(
                    PortalDirectory.destination_name == destination,
                    sa.or_(
                        col(PortalDirectory.path) == tree.target,
                        col(PortalDirectory.path).startswith(tree.target + "/", autoescape=True),
                    ),
                )
            ).all()
            if not made:
                raise NotFound(f"no such directory: {tree}")
            if any(d.path != tree.target for d in made):
                raise Conflict(f"directory {tree} is not empty")
            for directory in made:
                session.delete(directory)

    def rename(self, user: PortalUser, old: str, new: str) -> None:
        """Give a file a new target in the same destination; a temporary name becoming final releases it."""
        source, dest = parse_path(old), parse_path(new)
        # Finishing an upload made under a temporary name is part of putting it (rclone, lftp and
        # many scripts upload `x.partial` then rename): `put` is enough for that; other renames need
        # `rename`.
        finishing = is_temporary(source.target, self.temporary_patterns) and not is_temporary(
            dest.target, self.temporary_patterns
        )
        destination = self._destination(user, source, None)
        if Operation.RENAME not in user.reach[destination] and not (
            finishing and Operation.PUT in user.reach[destination]
        ):
            raise AccessDenied(f"data user {user.login} may not rename at {destination}")
        if dest.destination != destination:
            raise InvalidInput("a file can be renamed only within its destination")
        new_target = clean_target(dest.target) if dest.target else ""
        if not new_target:
            raise InvalidInput(f"{dest} is not a file name")
        release = not is_temporary(new_target, self.temporary_patterns)
        with session_scope(self.engine) as session:
            found = self._file(session, destination, source.target) if source.target else None
            if found is None:
                raise NotFound(f"no such file: {source}")
            if self._is_dir(session, destination, new_target):
                raise Conflict(f"{dest} is a directory")
            transfer, data_file = found
            if new_target == transfer.target:
                return
            # What the user sees under the new name is replaced, older uploads there included; the older
            # uploads the moved file hid under its old name go with it, so the old name is gone too.
            replaced = [t for t in self._versions(session, destination, new_target) if t.status not in BUSY]
            self._stop(session, replaced, by=user.login, reason=f"replaced by {old}")
            hidden = [
                t
                for t in self._versions(session, destination, transfer.target)
                if t.id != transfer.id and t.status not in BUSY
            ]
            self._stop(session, hidden, by=user.login, reason=f"superseded by {old}, renamed to {new}")
            held = transfer.status == S.STANDBY and is_temporary(transfer.target, self.temporary_patterns)
            siblings = [transfer]
            if held:
                # The aliases' transfers of an upload under a temporary name follow it to its final name.
                siblings += [
                    t
                    for t in session.exec(
                        select(DataTransfer).where(
                            DataTransfer.data_file_id == data_file.id, DataTransfer.id != transfer.id
                        )
                    )
                    if t.status == S.STANDBY
                ]
            for sibling in siblings:
                self._retarget(session, sibling, destination, new_target, user.login, release and held)
            if release and held:  # the upload under a temporary name has arrived under its final name
                announce_arrivals(session, self.settings, siblings)

    def _retarget(
        self, session: Session, transfer: DataTransfer, destination: str, target: str, by: str, release: bool
    ) -> None:
        assert transfer.id is not None
        if transfer.destination_name != destination:
            alias = session.exec(
                select(DestinationAlias).where(DestinationAlias.alias_name == transfer.destination_name)
            ).first()
            target = alias_target(alias, target) if alias is not None else target
        old = transfer.target
        transfer.target = target
        session.add(transfer)
        status = TransferStatus(transfer.status)
        record_history(session, transfer.id, "rename", status, status, by=by, reason=f"{old} → {target}")
        if release:
            change_status(session, transfer.id, "release", S.QUEUED, by=by, reason="renamed to its final name")

    # --- Quotas and the event log ----------------------------------------------------------------

    def _check_quota(self, session: Session, login: str, direction: str) -> int | None:
        """Bytes the user may still move in `direction` now (None: no limit); raise when none are left."""
        acc: PortalAccount = account(session, login)
        quota = acc.upload_quota_bytes if direction == "upload" else acc.download_quota_bytes
        if quota is None:
            return None
        since = utcnow() - timedelta(seconds=acc.quota_period_seconds)
        used = session.exec(
            select(func.coalesce(func.sum(PortalUsage.bytes), 0)).where(
                PortalUsage.login == login, PortalUsage.direction == direction, col(PortalUsage.at) >= since
            )
        ).one()
        remaining = quota - int(used)
        if remaining <= 0:
            raise QuotaExceeded(
                f"data user {login} used its {direction} quota of {quota} bytes per {acc.quota_period_seconds} s",
                retry_after=min(acc.quota_period_seconds, 3600),
            )
        return remaining

    def record_usage(
        self,
        user: PortalUser,
        transfer_id: int,
        direction: str,
        nbytes: int,
        protocol: str,
        client_address: str | None,
        started: datetime,
        elapsed: float,
    ) -> None:
        """Count the bytes against the user's quota and write the INH line, through the outbox: the
        line is committed with the usage it reports, so a crash right after loses neither."""
        with session_scope(self.engine) as session:
            outbox.claim_on_add(session, self.publisher)
            session.add(PortalUsage(login=user.login, direction=direction, bytes=nbytes))
            transfer = session.get(DataTransfer, transfer_id)
            data_file = session.get(DataFile, transfer.data_file_id) if transfer else None
            destination = session.get(Destination, transfer.destination_name) if transfer else None
            if transfer is not None and data_file is not None and destination is not None:
                inh = inh_from(
                    transfer,
                    data_file,
                    destination,
                    action=direction,
                    transfer_protocol=protocol,
                    transfer_server=self.server_name,
                    client_address=client_address,
                    user_id=user.login,
                    user_description=user.description or None,
                    country_code=user.country_code or None,
                    bytes_sent=nbytes,
                    start_time=started,
                    duration=int(elapsed * 1000),
                )
                outbox.add_lines(session, [inh])
            added = outbox.added(session)
        outbox.publish_lines(self.engine, self.events, self.publisher, added)


def portal_from_settings(settings: Settings, engine: sa.Engine, store: DataStore, events: EventLog) -> Portal:
    """The portal as `pds up` runs it: temporary patterns and server name from settings."""
    patterns = [p.strip() for p in settings.portal_temporary_patterns.split(",") if p.strip()]
    return Portal(
        engine,
        store,
        events,
        temporary_patterns=patterns,
        server_name=settings.mover_name,
        public_url=settings.resolved_public_url(),
        upload_idle_seconds=settings.upload_idle_seconds,
        fetch_wait_seconds=settings.portal_fetch_wait_seconds,
        settings=settings,
    )


def portal_from_environment() -> tuple[Settings, Portal]:
    """The portal of a standalone server process (FTP, SFTP): database, store and event log from `PDS_*`."""
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    delete_stale_copies_on_commit(engine, settings.resolved_proxy_cache_dir())
    store = DataStore.from_settings(settings)
    return settings, portal_from_settings(settings, engine, store, EventLog.open(settings.resolved_event_log()))


__all__ = [
    "ConnectionLimiter",
    "Download",
    "Entry",
    "Portal",
    "PortalUser",
    "TreePath",
    "Upload",
    "is_temporary",
    "parse_path",
    "portal_from_settings",
]
