"""Disseminate data files from the Data Store to a host, and record each outcome.

`send_data_file` is the byte mover: it streams one object to the host under a temporary name (when the
host can rename), checks the size (and the MD5 where the host reports one), then renames. Nothing is
ever visible under the final name until it is whole. `deliver` wraps it with the database: progress,
Done, or the scheduler's decision on failure. The `@task`s run one large file or a batch of small ones.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

import fsspec
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.base import HostBlock, ReadAhead
from blocks.deadline import PROGRESS_BYTES, Deadlines, Stalled
from catalog import attempts, outbox
from catalog.database import read_scope, session_scope
from catalog.errors import Conflict, RetryOnSameHost, TransferError
from catalog.store import DataStore
from catalog.transfers import Success, record_failure, record_progress, record_successes
from tasks import publishing, reporting
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


class AttemptOver(Exception):
    """The attempt is no longer the transfer's current one — stopped, or taken over by another mover —
    so its writer stops, removes its temporary file and records nothing."""


def send_data_file(
    store: DataStore,
    delivery: Delivery,
    fs: fsspec.AbstractFileSystem | None = None,
    *,
    progress: Callable[[int], bool | None] | None = None,
    progress_every: float = 1.0,
    deadlines: Deadlines | None = None,
    still_current: Callable[[], bool] | None = None,
) -> Sent:
    """Stream one object to the host; raise TransferError (classified) on any failure.

    Every call to the host has a deadline (`blocks.deadline`). `progress` is told the bytes sent
    between chunks, at most every `progress_every` seconds: when it answers False the attempt is over
    (`AttemptOver`), so a stopped transfer stops writing within about a second. `still_current` is
    asked just before the file takes its final name, so a stopped one never appears under it.
    """
    block, final = delivery.host, delivery.remote_path
    temp = temporary_path(final, delivery.transfer_id) if block.supports_rename else final
    started, written, sent = time.monotonic(), False, 0
    io = deadlines or Deadlines(block.name, block.timeout())
    owned = fs is None
    try:
        if fs is None:  # connecting is part of the attempt: its errors are classified too
            fs = io.connect(block.filesystem)
            connection = fs
            io.abort = lambda: block.abort(connection)
        parent = posixpath.dirname(final)
        if block.has_directories and parent and parent != "/":
            io.call("creating directories", fs.makedirs, parent, exist_ok=True)
        if temp != final and delivery.attempt != 1:
            # An earlier attempt's file goes before this one is created: a late writer of that attempt
            # (stopped, or its mover taken over) then writes into the old file, which is unlinked,
            # never into this attempt's — opening the same name for writing would share it.
            _remove_quietly(fs, temp, io)
        last_report = started
        pace = Pace.from_options(block.name, block.options)
        chunk_size = pace.chunk_size(store.chunk_size)
        # The next chunks are read from the Data Store in a thread while this one is on the wire (as
        # rclone's async reader does): a store on a cold disk or behind a network otherwise adds its
        # whole read time to the transfer. At most two chunks wait.
        with ReadAhead(store.open(delivery.store_key), chunk_size) as source:
            target = io.call("opening the file", fs.open, temp, "wb")
            try:
                while chunk := source.read(chunk_size):
                    io.write(target, chunk)
                    sent += len(chunk)
                    pace.after(sent)
                    if progress and time.monotonic() - last_report >= progress_every:
                        if progress(sent) is False:
                            raise AttemptOver(f"transfer {delivery.transfer_id}: attempt over after {sent} bytes")
                        last_report = time.monotonic()
            except BaseException:
                if io.stalled is None:  # a stalled connection takes no more calls
                    _abandon(target, keep_partial=block.supports_rename)
                raise
            discardable = callable(getattr(target, "discard", None))
            if temp == final and discardable and still_current is not None and not still_current():
                # Without a rename, closing is what makes the object visible: not for a finished attempt.
                _abandon(target, keep_partial=False)
                raise AttemptOver(f"transfer {delivery.transfer_id}: attempt over before the upload was committed")
            # Closing may send the last buffered part (object stores): it gets time for that part too.
            io.call("closing the file", target.close, seconds=io.timeout * max(1, chunk_size // PROGRESS_BYTES))
        written = True
        confirmed = block.confirmed_write(target)  # what the host said when it took the file, if anything
        if confirmed is not None:
            remote_size, md5 = confirmed
        else:
            remote_size = int(io.call("checking the size", fs.size, temp)) if block.reads_back else sent
        if remote_size != delivery.size or sent != delivery.size:
            raise RetryOnSameHost(
                f"size check failed on host {block.name}: sent {sent}, host has {remote_size}, expected {delivery.size}"
            )
        if confirmed is None:
            md5 = io.call("checking the MD5", block.remote_md5, fs, temp) if block.reports_md5 else None
        if md5 is not None and md5 != delivery.md5:
            raise RetryOnSameHost(f"MD5 check failed on host {block.name}: host has {md5}, expected {delivery.md5}")
        if temp != final:
            # The fence: the final name is written only while this attempt is still the current one.
            if still_current is not None and not still_current():
                raise AttemptOver(f"transfer {delivery.transfer_id}: attempt over before the rename")
            io.call("renaming", fs.mv, temp, final)
    except BaseException as exc:
        healthy = fs is not None and io.stalled is None
        if healthy and not isinstance(exc, KeyboardInterrupt | SystemExit | AttemptOver):
            with contextlib.suppress(Stalled):  # then the error stays the one the attempt saw
                exc = io.call("diagnosing", block.diagnose, fs, temp, exc, delivery.size)
        # A temporary file always goes; a final object only if this attempt wrote it (an object store
        # without rename), so a bad copy is never left where the site would take it as good.
        if healthy and (temp != final or written):
            _remove_quietly(fs, temp, io)
        if isinstance(exc, KeyboardInterrupt | SystemExit | AttemptOver):
            raise
        raise block.classify(exc) from exc
    finally:
        if deadlines is None:  # this attempt's own connection, if it made one
            _close_quietly(block, fs if owned else None, io)
            io.close()
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


def _close_quietly(block: HostBlock, fs: fsspec.AbstractFileSystem | None, io: Deadlines) -> None:
    if fs is None or io.stalled is not None:
        return  # nothing opened, or already aborted
    try:
        io.call("closing the connection", block.close, fs)
    except Exception:  # noqa: BLE001 — the outcome is decided; the server drops the session anyway
        log.debug("could not close the connection to host %s", block.name, exc_info=True)


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str | None, io: Deadlines | None = None) -> None:
    if path is None:
        return
    try:
        if io is None:
            if fs.exists(path):
                fs.rm(path)
        elif io.call("looking for the temporary file", fs.exists, path):
            io.call("removing the temporary file", fs.rm, path)
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


ALREADY_THERE = "already at the site: delivered before the mover's interruption"


def prepare(delivery: Delivery, fs: fsspec.AbstractFileSystem | None) -> tuple[Delivery, str | None, bool]:
    """What to send (compressed first if the destination asks), the codec applied, and whether an
    attempt a mover's crash interrupted already delivered it."""
    delivery, applied = compress_delivery(delivery.source or runtime().store, delivery)
    if already_there(delivery, fs):
        log.info("transfer %s: %s is already at the site", delivery.transfer_id, delivery.remote_path)
        return delivery, applied, True
    return delivery, applied, False


def stream(
    delivery: Delivery, applied: str | None, fs: fsspec.AbstractFileSystem | None, io: Deadlines | None = None
) -> Delivered:
    """Stream one prepared file to its host, reporting progress on the way (`send_data_file`); the
    progress reports and the check before the rename carry the attempt's number, its fencing token."""
    rt = runtime()

    def progress(sent: int) -> bool:
        with session_scope(rt.engine) as session:
            return record_progress(session, delivery.transfer_id, sent, delivery.attempt)

    def still_current() -> bool:
        if delivery.attempt is None:
            return True
        with read_scope(rt.engine) as session:  # a read: no write lock, per file
            return attempts.still_running(session, delivery.transfer_id, delivery.attempt)

    sent = send_data_file(
        delivery.source or rt.store, delivery, fs, progress=progress, deadlines=io, still_current=still_current
    )
    return Delivered(delivery, sent, applied)


def attempt(delivery: Delivery, mover: str, fs: fsspec.AbstractFileSystem | None = None) -> Delivered:
    """Send one file (compressed first if its destination asks); a failure is recorded at once,
    with its ERR line, and raised classified. A success is returned for `record_delivered`."""
    try:
        delivery, applied, there = prepare(delivery, fs)
        if there:
            return Delivered(delivery, Sent(delivery.size, 0.0, md5_verified=False), applied, ALREADY_THERE)
        return stream(delivery, applied, fs)
    except AttemptOver:
        log.info("transfer %s: attempt %s is over; nothing recorded", delivery.transfer_id, delivery.attempt)
        raise
    except Exception as exc:
        classified = record_failed(delivery, mover, exc)
        if classified is exc:
            raise
        raise classified from exc


def record_failed(delivery: Delivery, mover: str, exc: Exception) -> TransferError:
    """Record a failed attempt (the scheduler's decision) and write its ERR line; return the
    classified error."""
    rt = runtime()
    classified = delivery.host.classify(exc)
    try:
        with session_scope(rt.engine) as session:
            outbox.claim_on_add(session, mover)
            record_failure(
                session, delivery.transfer_id, classified, host=delivery.host.name, by=mover, attempt=delivery.attempt
            )
    except Conflict as conflict:  # the attempt was stopped or taken over meanwhile: its outcome is not ours
        log.info(
            "transfer %s: failure of a finished attempt not recorded (%s): %s",
            delivery.transfer_id,
            conflict,
            classified,
        )
        return classified
    publishing.publish_added(rt.engine, rt.settings, mover, outbox.added(session))
    return classified


class ParallelPuts:
    """Small files of a batch in flight at once over one connection: each is read whole from the
    store and written by `HostBlock.put_whole` on the filesystem's event loop, at most
    `HostBlock.parallel_puts()` at a time, as rclone keeps several transfers going.

    One file after another, a small file's time is mostly the round trip; with several in flight,
    the mover's time goes to the work itself. Outcomes come back in the order the files went out.
    """

    def __init__(self, store: DataStore, fs: fsspec.AbstractFileSystem) -> None:
        self.store, self.fs = store, fs
        self._in_flight: collections.deque[tuple[Delivery, str | None, float, Future[tuple[int, str | None]]]] = (
            collections.deque()
        )

    def suits(self, delivery: Delivery) -> bool:
        """Whether `delivery` can go this way: a file the host takes whole, and no rate options
        (those need a streamed, paced write)."""
        block = delivery.host
        return (
            block.parallel_puts() > 1
            and delivery.size <= block.whole_put_limit()
            and not block.options.get("max_rate")
            and not block.options.get("min_rate")
        )

    def start(self, delivery: Delivery, compression: str | None) -> None:
        """Read the file and put it in flight (reading a store file is not for the event loop)."""
        with (delivery.source or self.store).open(delivery.store_key) as source:
            data = source.read()
        if len(data) != delivery.size:  # checked before anything is written, as a streamed file is
            raise RetryOnSameHost(
                f"size check failed for host {delivery.host.name}: read {len(data)} bytes from the store, "
                f"expected {delivery.size}"
            )
        block, final = delivery.host, delivery.remote_path
        temporary = temporary_path(final, delivery.transfer_id) if block.supports_rename else None
        put = block.put_whole(
            self.fs, final, data, temporary=temporary, replace_temporary=temporary is not None and delivery.attempt != 1
        )
        future = asyncio.run_coroutine_threadsafe(put, self.fs.loop)
        self._in_flight.append((delivery, compression, time.monotonic(), future))

    def full(self) -> bool:
        return bool(self._in_flight) and len(self._in_flight) >= self._in_flight[0][0].host.parallel_puts()

    def __bool__(self) -> bool:
        return bool(self._in_flight)

    def finish_oldest(self) -> tuple[Delivery, Delivered | Exception]:
        """Wait for the oldest file in flight: what was delivered, or what went wrong (an object that
        arrived but failed its checks is removed, so the site never takes it as good)."""
        delivery, compression, started, future = self._in_flight.popleft()
        block, path, written = delivery.host, delivery.remote_path, False
        try:
            try:  # the whole file in one request: the host's timeout for each MiB of it
                size, md5 = future.result(timeout=block.timeout() * max(1, delivery.size / PROGRESS_BYTES))
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise Stalled(f"no answer from host {block.name} while putting {path}") from None
            written = True
            if size != delivery.size:
                raise RetryOnSameHost(
                    f"size check failed on host {block.name}: host has {size}, expected {delivery.size}"
                )
            if md5 is not None and md5 != delivery.md5:
                raise RetryOnSameHost(f"MD5 check failed on host {block.name}: host has {md5}, expected {delivery.md5}")
        except Exception as exc:  # noqa: BLE001 — handed to the caller, which records it
            diagnosed = block.diagnose(self.fs, path, exc, delivery.size)
            if written:
                _remove_quietly(self.fs, path)
            return delivery, diagnosed if isinstance(diagnosed, Exception) else exc
        sent = Sent(bytes=size, seconds=time.monotonic() - started, md5_verified=md5 is not None)
        return delivery, Delivered(delivery, sent, compression)


class BatchFence:
    """Whether each file of a batch is still its transfer's current attempt when its turn comes: asked
    of the database for all the batch's files not yet started, in one query at most every `every`
    seconds, so a small file costs no query of its own. A transfer stopped (or taken over) while its
    batch runs is then not sent once the next check has seen it; a file already in flight — a few
    milliseconds for a small one — completes, and is not recorded Done."""

    def __init__(self, every: float = 1.0) -> None:
        self.every, self.checked_at = every, time.monotonic()  # the claim itself was the first check
        self.over: set[int] = set()

    def allows(self, batch: list[Delivery], index: int) -> bool:
        """Whether `batch[index]` may start (the files before it have started)."""
        delivery = batch[index]
        if delivery.attempt is None:
            return True
        if time.monotonic() - self.checked_at >= self.every:
            numbers = {d.transfer_id: d.attempt for d in batch[index:] if d.attempt is not None}
            with read_scope(runtime().engine) as session:  # a read: no write lock
                running = attempts.still_running_among(session, numbers)
            self.over |= numbers.keys() - running
            self.checked_at = time.monotonic()
        return delivery.transfer_id not in self.over


def record_delivered(done: list[Delivered], mover: str) -> None:
    """Record files that reached their sites as Done — a batch in one transaction of a few
    statements, so small files do not queue for the database's write lock once per file — with
    their event lines and notifications (outbox rows), then publish those.

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
            attempt=item.delivery.attempt,
        )
        for item in done
    ]
    paths = {item.delivery.transfer_id: item.delivery.remote_path for item in done}
    with session_scope(rt.engine) as session:
        outbox.claim_on_add(session, mover)
        recorded = record_successes(session, successes, by=mover)  # with the UPH lines
        reports = reporting.done_reports(session, [(t, paths[t.id]) for t in recorded.done if t.id is not None])
        reporting.add_notifications(session, rt.settings, reports)
    for transfer_id, refusal in recorded.refused.items():
        log.warning("transfer %s was delivered but not recorded Done: %s", transfer_id, refusal)
    # after the commit: copying to the event log and the broker must not hold the write lock
    publishing.publish_added(rt.engine, rt.settings, mover, outbox.added(session))


def deliver(delivery: Delivery, mover: str, fs: fsspec.AbstractFileSystem | None = None) -> Sent:
    """Send one file and record the outcome in the database (Done, or the failure decision)."""
    delivered = attempt(delivery, mover, fs)
    record_delivered([delivered], mover)
    return delivered.sent


@task(name="send-file", task_run_name="send {delivery.remote_path}", cache_policy=NO_CACHE)
def send_file(delivery: Delivery, mover: str) -> int:
    """One (large) file as one task run."""
    return deliver(delivery, mover).bytes


#: A batch records its delivered files at least this often (seconds), so the monitor stays current;
#: each recording has a fixed cost of a few ms (the destination's state, the hosts, a commit).
RECORD_EVERY = 1.0


@task(name="send-batch", task_run_name="send {deliveries[0].host.name} batch of {n}", cache_policy=NO_CACHE)
def send_batch(deliveries: list[Delivery], mover: str, n: int) -> dict[int, str]:
    """Small files to one host over one connection (several in flight where the host allows it);
    each file's outcome is recorded (successes a few at a time, failures at once)."""
    host = deliveries[0].host
    io = Deadlines(host.name, host.timeout())
    try:
        fs = io.connect(host.filesystem)
    except Exception as exc:  # noqa: BLE001 — every file of the batch would fail the same way
        io.close()
        for delivery in deliveries:
            record_failed(delivery, mover, exc)
        raise RetryOnSameHost(f"{n} file(s) not sent: {host.classify(exc)}") from exc
    io.abort = lambda: host.abort(fs)
    puts = ParallelPuts(runtime().store, fs)
    outcomes: dict[int, str] = {}
    pending: list[Delivered] = []
    last_record = time.monotonic()

    def outcome(delivery: Delivery, result: Delivered | Exception) -> None:
        if isinstance(result, Delivered):
            pending.append(result)
            outcomes[delivery.transfer_id] = "Done"
        elif isinstance(result, AttemptOver):
            outcomes[delivery.transfer_id] = f"attempt over: {result}"
        else:
            outcomes[delivery.transfer_id] = f"failed: {record_failed(delivery, mover, result)}"

    fence = BatchFence(RECORD_EVERY)
    try:
        for i, delivery in enumerate(deliveries):
            if not fence.allows(deliveries, i):
                outcome(delivery, AttemptOver(f"transfer {delivery.transfer_id}: attempt over before it was sent"))
                continue
            try:
                delivery, applied, there = prepare(delivery, fs)
                if there:
                    outcome(delivery, Delivered(delivery, Sent(delivery.size, 0.0, False), applied, ALREADY_THERE))
                elif puts.suits(delivery):
                    puts.start(delivery, applied)
                    while puts.full():
                        outcome(*puts.finish_oldest())
                else:
                    outcome(delivery, stream(delivery, applied, fs, io))
            except Exception as exc:  # noqa: BLE001 — recorded as this file's failed attempt
                outcome(delivery, exc)
            if pending and time.monotonic() - last_record >= RECORD_EVERY:
                record_delivered(pending, mover)
                pending, last_record = [], time.monotonic()
        while puts:
            outcome(*puts.finish_oldest())
    finally:
        _close_quietly(host, fs, io)
        io.close()
        record_delivered(pending, mover)
    failed = [tid for tid, result in outcomes.items() if result != "Done"]
    if failed:
        raise RetryOnSameHost(f"{len(failed)} of {n} files failed: transfers {failed}")
    return outcomes
