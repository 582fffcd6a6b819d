"""A download or an upload in progress through the Data Portal, whatever the protocol."""

from __future__ import annotations

import posixpath
import random
import time
from collections.abc import Generator
from typing import IO, TYPE_CHECKING

from catalog.arrivals import announce_arrivals
from catalog.database import session_scope
from catalog.errors import Conflict, QuotaExceeded
from catalog.lifecycle import record_upload_progress
from catalog.models import DataFile, DataTransfer, utcnow
from catalog.portal_paths import Entry, PortalUser, entry_of
from catalog.stac import harvest_stored_data_file
from catalog.statuses import TransferStatus
from catalog.store import ObjectWriter, StoredObject
from catalog.submission import PushRequest, abort_push, finish_push
from catalog.transfers import change_status

if TYPE_CHECKING:
    from catalog.portal import Portal

S = TransferStatus


class Download:
    """A file being read: iterate `chunks()`; a read of the whole file marks its transfer Done."""

    def __init__(
        self,
        portal: Portal,
        user: PortalUser,
        transfer: DataTransfer,
        data_file: DataFile,
        protocol: str,
        client_address: str | None,
        start: int,
        length: int | None,
    ) -> None:
        self.portal, self.user, self.transfer, self.data_file = portal, user, transfer, data_file
        self.protocol, self.client_address = protocol, client_address
        self.size = data_file.size or 0
        self.start = start
        self.length = length
        self.sent = 0
        self._started = utcnow()
        self._clock = time.monotonic()
        self._finished = False
        self._handle: IO[bytes] | None = None

    @property
    def entry(self) -> Entry:
        return entry_of(posixpath.basename(self.transfer.target), self.transfer, self.data_file)

    def chunks(self) -> Generator[bytes]:
        assert self.data_file.store_key is not None
        try:
            for chunk in self.portal.store.iter_chunks(self.data_file.store_key, self.start, self.length):
                self.sent += len(chunk)
                yield chunk
        finally:
            self.finish()

    def read_at(self, offset: int, size: int) -> bytes:
        """Random access (SFTP reads): one bounded read from a handle kept open until `finish()`."""
        assert self.data_file.store_key is not None
        if self._handle is None:
            self._handle = self.portal.store.open(self.data_file.store_key)
        self._handle.seek(offset)
        data = self._handle.read(size)
        self.sent += len(data)
        return data

    def _mark_done(self, transfer_id: int) -> None:
        """Record the whole download (Done). Downloads of one file that end at the same moment race
        on the transfer's row: the loser reads it again and records its own download too (after a few
        lost races it gives up: the transfer is Done already, and the INH line records the download)."""
        for attempt in range(5):
            try:
                with session_scope(self.portal.engine) as session:
                    current = session.get(DataTransfer, transfer_id)
                    if current is None or current.status not in (S.QUEUED, S.REQUEUED, S.STANDBY, S.DONE):
                        return
                    change_status(
                        session,
                        transfer_id,
                        "downloaded",
                        S.DONE,
                        by=self.user.login,
                        reason=f"downloaded over {self.protocol}",
                        finished_at=utcnow(),
                    )
                return
            except Conflict:
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # noqa: S311 — spreading retries only

    def finish(self) -> None:
        """Account the bytes sent; a complete download (from byte 0 to the end) marks the transfer Done."""
        if self._finished:
            return
        self._finished = True
        if self._handle is not None:
            self._handle.close()
        transfer_id = self.transfer.id
        assert transfer_id is not None
        whole = self.start == 0 and self.sent >= self.size
        if whole:
            self._mark_done(transfer_id)
        self.portal.record_usage(
            self.user,
            transfer_id,
            "download",
            self.sent,
            self.protocol,
            self.client_address,
            self._started,
            time.monotonic() - self._clock,
        )


class Upload:
    """A file being written: `write()` chunks, then `commit()` (queues it) or `abort(reason)`."""

    def __init__(
        self,
        portal: Portal,
        user: PortalUser,
        request: PushRequest,
        data_file_id: int,
        protocol: str,
        client_address: str | None,
        remaining_quota: int | None,
    ) -> None:
        self.portal, self.user, self.request, self.data_file_id = portal, user, request, data_file_id
        self.protocol, self.client_address = protocol, client_address
        self.remaining_quota = remaining_quota
        self.writer: ObjectWriter = portal.store.writer()
        self._started = utcnow()
        self._clock = self._noted = time.monotonic()
        # Progress is noted often enough that the movers never take a live upload for an idle one.
        self._note_every = min(5.0, portal.upload_idle_seconds / 4)
        self.done = False

    @property
    def size(self) -> int:
        return self.writer.size

    def write(self, chunk: bytes) -> None:
        if self.remaining_quota is not None and self.writer.size + len(chunk) > self.remaining_quota:
            self.abort("upload quota exceeded")
            raise QuotaExceeded(
                f"data user {self.user.login} would exceed its upload quota with this file", retry_after=3600
            )
        self.writer.write(chunk)
        if self.progress_due():
            self.note_progress()

    def progress_due(self) -> bool:
        """Whether to note progress now: a front end that gathers chunks before it writes them asks
        this for every piece it receives, so a slow upload is never taken for an idle one."""
        return time.monotonic() - self._noted >= self._note_every

    def note_progress(self) -> None:
        """Record that the upload is alive, or raise Conflict if it was failed as idle meanwhile."""
        self._noted = time.monotonic()
        with session_scope(self.portal.engine) as session:
            alive = record_upload_progress(session, self.data_file_id, self.writer.size)
        if not alive:  # failed as idle while the client was silent: what comes late is not taken
            self.done = True
            self.writer.abort()
            raise Conflict(
                f"upload of {self.request.target} broke off: nothing arrived for "
                f"{self.portal.upload_idle_seconds:.0f} s and it was failed; send the file again"
            )

    def commit(self) -> tuple[StoredObject, list[DataTransfer]]:
        """The content is whole: store it, queue (or hold) the transfers, write the INH line."""
        if self.progress_due():  # else it cannot have been failed as idle
            self.note_progress()  # one that was is refused here, before its content is kept
        stored = self.writer.commit()
        self.done = True
        with session_scope(self.portal.engine) as session:
            queued = finish_push(session, self.data_file_id, stored, self.request, by=self.user.login)
            # Announced in the transaction that makes the file available: both happen, or neither.
            announce_arrivals(session, self.portal.settings, queued, temporary=self.portal.is_temporary)
        if self.portal.public_url is not None:
            # Published destinations get their STAC item now; a failure there never undoes the upload.
            with session_scope(self.portal.engine) as session:
                harvest_stored_data_file(
                    session, self.portal.store, self.data_file_id, public_url=self.portal.public_url
                )
        own = next((t for t in queued if t.destination_name == self.request.destination), queued[0])
        assert own.id is not None
        self.portal.record_usage(
            self.user,
            own.id,
            "upload",
            stored.size,
            self.protocol,
            self.client_address,
            self._started,
            time.monotonic() - self._clock,
        )
        return stored, queued

    def abort(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.writer.abort()
        with session_scope(self.portal.engine) as session:
            abort_push(session, self.data_file_id, reason, by=self.user.login)
