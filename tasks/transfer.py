"""Disseminate data files from the Data Store to a host, and record each outcome.

`send_data_file` is the byte mover: it streams one object to the host under a temporary name (when the
host can rename), checks the size (and the MD5 where the host reports one), then renames. Nothing is
ever visible under the final name until it is whole. `deliver` wraps it with the database: progress,
Done, or the scheduler's decision on failure. The `@task`s run one large file or a batch of small ones.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

import fsspec
from prefect import task

from blocks.base import ReadAhead
from catalog.database import session_scope
from catalog.errors import RetryOnSameHost, TransferError
from catalog.store import DataStore
from catalog.transfers import Success, record_failure, record_progress, record_successes
from tasks import reporting
from tasks.compression import compress_delivery
from tasks.delivery import Delivery
from tasks.runtime import runtime

log = logging.getLogger("pds.transfer")


@dataclass(frozen=True)
class Sent:
    bytes: int
    seconds: float
    md5_verified: bool


def temporary_path(final: str, transfer_id: int) -> str:
    """A hidden sibling of `final`, unique per transfer, so readers at the site never pick it up."""
    directory, name = posixpath.split(final)
    return posixpath.join(directory, f".{name}.pds-{transfer_id}.tmp")


def send_data_file(
    store: DataStore,
    delivery: Delivery,
    fs: fsspec.AbstractFileSystem | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: float = 2.0,
) -> Sent:
    """Stream one object to the host; raise TransferError (classified) on any failure."""
    block, final = delivery.host, delivery.remote_path
    temp = temporary_path(final, delivery.transfer_id) if block.supports_rename else final
    started, written = time.monotonic(), False
    try:
        fs = fs or block.filesystem()  # connecting is part of the attempt: its errors are classified too
        parent = posixpath.dirname(final)
        if block.has_directories and parent and parent != "/":
            fs.makedirs(parent, exist_ok=True)
        sent, last_report, written = 0, started, False
        pace = Pace.from_options(block.name, block.options)
        chunk_size = pace.chunk_size(store.chunk_size)
        # The next chunks are read from the Data Store in a thread while this one is on the wire (as
        # rclone's async reader does): a store on a cold disk or behind a network otherwise adds its
        # whole read time to the transfer. At most two chunks wait.
        with ReadAhead(store.open(delivery.store_key), chunk_size) as source:
            target = fs.open(temp, "wb")
            try:
                while chunk := source.read(chunk_size):
                    target.write(chunk)
                    sent += len(chunk)
                    pace.after(sent)
                    if progress and time.monotonic() - last_report >= progress_every:
                        progress(sent)
                        last_report = time.monotonic()
            except BaseException:
                _abandon(target, keep_partial=block.supports_rename)
                raise
            target.close()
        written = True
        confirmed = block.confirmed_write(target)  # what the host said when it took the file, if anything
        if confirmed is not None:
            remote_size, md5 = confirmed
        else:
            remote_size = int(fs.size(temp)) if block.reads_back else sent
        if remote_size != delivery.size or sent != delivery.size:
            raise RetryOnSameHost(
                f"size check failed on host {block.name}: sent {sent}, host has {remote_size}, expected {delivery.size}"
            )
        if confirmed is None:
            md5 = block.remote_md5(fs, temp) if block.reports_md5 else None
        if md5 is not None and md5 != delivery.md5:
            raise RetryOnSameHost(f"MD5 check failed on host {block.name}: host has {md5}, expected {delivery.md5}")
        if temp != final:
            fs.mv(temp, final)
    except BaseException as exc:
        if fs is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            exc = block.diagnose(fs, temp, exc, delivery.size)
        # A temporary file always goes; a final object only if this attempt wrote it (an object store
        # without rename), so a bad copy is never left where the site would take it as good.
        if fs is not None and (temp != final or written):
            _remove_quietly(fs, temp)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise block.classify(exc) from exc
    return Sent(bytes=sent, seconds=time.monotonic() - started, md5_verified=md5 is not None)


def _abandon(target: IO[bytes], *, keep_partial: bool) -> None:
    """Stop writing after a failure. Closing would *commit* what was written on an object store
    (fsspec closes files on error), so there the upload is discarded instead; a partial file under a
    temporary name is closed and then removed by the caller."""
    try:
        discard = getattr(target, "discard", None)
        if keep_partial or not callable(discard):
            target.close()
            return
        discard()  # s3fs: abort the multipart upload
        target.closed = True  # type: ignore[misc]  # and never let close() or __del__ commit it
    except Exception:  # noqa: BLE001 — the transfer already failed; its error is what matters
        log.warning("could not abandon the upload cleanly", exc_info=True)


class Pace:
    """A host's rate options: `max_rate` (bytes/s, a cap) and `min_rate` after `min_rate_after` seconds
    (bytes/s; slower transfers are interrupted and retried rather than left to crawl)."""

    def __init__(self, host: str, max_rate: float = 0, min_rate: float = 0, min_rate_after: float = 60) -> None:
        self.host, self.max_rate, self.min_rate, self.min_rate_after = host, max_rate, min_rate, min_rate_after
        self.started = time.monotonic()

    @classmethod
    def from_options(cls, host: str, options: dict[str, Any]) -> Pace:
        return cls(
            host,
            float(options.get("max_rate", 0)),
            float(options.get("min_rate", 0)),
            float(options.get("min_rate_after", 60)),
        )

    def chunk_size(self, default: int) -> int:
        # Under a cap, write about four pieces a second so the rate is smooth, not bursts and pauses.
        return max(1024, min(default, int(self.max_rate / 4))) if self.max_rate else default

    def after(self, sent: int) -> None:
        elapsed = time.monotonic() - self.started
        if self.max_rate and sent / self.max_rate > elapsed:
            time.sleep(sent / self.max_rate - elapsed)
            elapsed = time.monotonic() - self.started
        if self.min_rate and elapsed >= self.min_rate_after and sent / elapsed < self.min_rate:
            raise RetryOnSameHost(
                f"transfer to host {self.host} too slow: {sent / elapsed:.0f} B/s after {elapsed:.0f} s, "
                f"minimum {self.min_rate:.0f} B/s"
            )


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str | None) -> None:
    if path is None:
        return
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception:  # noqa: BLE001 — the transfer already failed; its error is what matters
        log.warning("could not remove temporary file %s", path)


def already_there(delivery: Delivery, fs: fsspec.AbstractFileSystem | None) -> bool:
    """Whether an attempt that a mover's crash interrupted had already delivered the file.

    A mover killed between the final rename and recording Done would otherwise send the file again
    under its final name. It counts as delivered when the final name holds a file of the right size
    (and MD5, where the host reports one) written since that attempt began.
    """
    since = delivery.interrupted_attempt_at
    if since is None:
        return False
    block = delivery.host
    try:
        fs = fs or block.filesystem()
        if not fs.exists(delivery.remote_path) or int(fs.size(delivery.remote_path)) != delivery.size:
            return False
        if fs.modified(delivery.remote_path) < since - timedelta(seconds=2):  # a little clock skew
            return False
        md5 = block.remote_md5(fs, delivery.remote_path) if block.reports_md5 else None
        return md5 is None or md5 == delivery.md5
    except Exception:  # noqa: BLE001 — cannot tell: send it again, the safe side
        return False


@dataclass(frozen=True)
class Delivered:
    """A file that reached its site, waiting to be recorded Done."""

    delivery: Delivery
    sent: Sent
    compression: str | None
    note: str = ""


def attempt(delivery: Delivery, mover: str, fs: fsspec.AbstractFileSystem | None = None) -> Delivered:
    """Send one file (compressed first if its destination asks); a failure is recorded at once,
    with its ERR line, and raised classified. A success is returned for `record_delivered`."""
    rt = runtime()

    def progress(sent: int) -> None:
        with session_scope(rt.engine) as session:
            record_progress(session, delivery.transfer_id, sent)

    try:
        delivery, applied = compress_delivery(rt.store, delivery)
        if already_there(delivery, fs):
            log.info("transfer %s: %s is already at the site", delivery.transfer_id, delivery.remote_path)
            sent = Sent(bytes=delivery.size, seconds=0.0, md5_verified=False)
            return Delivered(delivery, sent, applied, "already at the site: delivered before the mover's interruption")
        return Delivered(delivery, send_data_file(rt.store, delivery, fs, progress=progress), applied)
    except Exception as exc:
        classified = delivery.host.classify(exc)
        with session_scope(rt.engine) as session:
            transfer = record_failure(session, delivery.transfer_id, classified, host=delivery.host.name, by=mover)
        reporting.attempt_failed(rt.engine, rt.settings, transfer, str(classified))
        if classified is exc:
            raise
        raise classified from exc


def record_delivered(done: list[Delivered], mover: str) -> None:
    """Record files that reached their sites as Done — a batch in one transaction of a few
    statements, so small files do not queue for the database's write lock once per file — then
    write their event lines and notifications.

    A crash before this commit leaves the transfers Transferring; recovery requeues them and
    `already_there` sees the files at the sites, so none is sent twice. A transfer that an operator
    changed meanwhile (stopped it) keeps its new status; the file at the site stays.
    """
    if not done:
        return
    rt = runtime()
    successes = [
        Success(
            item.delivery.transfer_id,
            host=item.delivery.host.name,
            bytes_sent=item.sent.bytes,
            sent_md5=item.delivery.md5,
            compression=item.compression,
            note=item.note,
        )
        for item in done
    ]
    paths = {item.delivery.transfer_id: item.delivery.remote_path for item in done}
    with session_scope(rt.engine) as session:
        recorded = record_successes(session, successes, by=mover)
        reports = reporting.done_reports(session, [(t, paths[t.id]) for t in recorded.done if t.id is not None])
    for transfer_id, refusal in recorded.refused.items():
        log.warning("transfer %s was delivered but not recorded Done: %s", transfer_id, refusal)
    # after the commit: event lines and MQTT must not hold the write lock
    reporting.delivered(rt.settings, reports)


def deliver(delivery: Delivery, mover: str, fs: fsspec.AbstractFileSystem | None = None) -> Sent:
    """Send one file and record the outcome in the database (Done, or the failure decision)."""
    delivered = attempt(delivery, mover, fs)
    record_delivered([delivered], mover)
    return delivered.sent


@task(name="send-file", task_run_name="send {delivery.remote_path}")
def send_file(delivery: Delivery, mover: str) -> int:
    """One (large) file as one task run."""
    return deliver(delivery, mover).bytes


#: A batch records its delivered files at least this often (seconds), so the monitor stays current.
RECORD_EVERY = 0.5


@task(name="send-batch", task_run_name="send {deliveries[0].host.name} batch of {n}")
def send_batch(deliveries: list[Delivery], mover: str, n: int) -> dict[int, str]:
    """Small files to one host over one connection; each file's outcome is recorded (successes a
    few at a time, failures at once)."""
    try:
        fs = deliveries[0].host.filesystem()
    except Exception:  # noqa: BLE001 — each delivery then connects on its own and records why it failed
        fs = None
    outcomes: dict[int, str] = {}
    pending: list[Delivered] = []
    last_record = time.monotonic()
    try:
        for delivery in deliveries:
            try:
                pending.append(attempt(delivery, mover, fs))
                outcomes[delivery.transfer_id] = "Done"
            except TransferError as error:
                outcomes[delivery.transfer_id] = f"failed: {error}"
            if pending and time.monotonic() - last_record >= RECORD_EVERY:
                record_delivered(pending, mover)
                pending, last_record = [], time.monotonic()
    finally:
        record_delivered(pending, mover)
    failed = [tid for tid, outcome in outcomes.items() if outcome != "Done"]
    if failed:
        raise RetryOnSameHost(f"{len(failed)} of {n} files failed: transfers {failed}")
    return outcomes
