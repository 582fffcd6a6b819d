"""The structured event log: OpenECPDS's PRS, RET, UPH, INH, ERR and CPY lines, field for field.

Sites already feed these lines to Splunk, ELK, Graylog or Fluentd with parsers written for OpenECPDS,
so each record renders exactly as the OpenECPDS README shows it: `CAT;Key=Value;Key=Value...` on one
line, keys in the README's order, `-` for a value that is not known, `true`/`false` for flags,
durations in milliseconds and times in the style of Java's `Timestamp.toString()` (in UTC here).

`FORMATS` declares each line: its keys, in order. Records are plain frozen dataclasses holding the
values, so any caller can build one from the values it has; the `*_from` constructors map the
catalog's entities onto them for the common cases. `EventLog` appends the lines to a file or a
stream. Nothing here touches the database or knows about Prefect.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TextIO

from catalog.models import DataFile, DataTransfer, Destination, Host
from catalog.statuses import TransferStatus

logger = logging.getLogger(__name__)

#: What a record field may hold before rendering.
Value = str | int | bool | datetime | timedelta | None

#: How a value that is not known renders, as in OpenECPDS.
MISSING = "-"

# A line is split on `;` into fields and on the first `=` into key and value, so a value must hold
# neither a line break nor a `;`. Line breaks (every character `str.splitlines` breaks on) become one
# space, which keeps a multi-line error message readable on one line; `;` becomes `,`, the nearest
# separator that parsers do not split on. `=` stays: parsers split on the first one only, and the
# README's own ERR example has one inside its Message.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def clean_value(text: str) -> str:
    """A value that cannot break the line format; `-` when empty, like a value that is not known."""
    text = _LINE_BREAKS.sub(" ", text).replace(";", ",")
    return text if text else MISSING


def format_timestamp(moment: datetime) -> str:
    """A time as Java's `Timestamp.toString()` shows one, in UTC, to the millisecond.

    OpenECPDS keeps times in milliseconds and Java drops the trailing zeros of the fraction but keeps
    at least one digit: 06:53:10.0, 12:29:43.98, 09:00:53.139. A naive time is taken as UTC, since the
    catalog stores UTC only and an event line is no place to fail a transfer over a missing zone.
    """
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    fraction = f"{moment.microsecond // 1000:03d}".rstrip("0") or "0"
    return f"{moment:%Y-%m-%d %H:%M:%S}.{fraction}"


def format_duration(duration: timedelta | int) -> str:
    """Milliseconds, the unit of every duration in the OpenECPDS lines (an int is taken as such)."""
    if isinstance(duration, timedelta):
        return str(duration // timedelta(milliseconds=1))
    return str(duration)


def format_value(value: Value) -> str:
    """One value as it appears after `Key=`."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, TransferStatus):
        return value.code
    if isinstance(value, int):
        return str(value)
    return clean_value(value)


def parse_line(line: str) -> tuple[str, list[tuple[str, str]]]:
    """The category and the (key, value) pairs of one line, in order: the inverse of `Event.render`."""
    category, *fields = line.rstrip("\r\n").split(";")
    pairs = []
    for item in fields:
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return category, pairs


#: Every line format: its category and its keys in the order OpenECPDS writes them, each format
#: written out whole so that it reads against the OpenECPDS README line for line. This table is the
#: only place the order is declared; the record classes below only hold the values (attribute
#: `data_transfer_id` for key `DataTransferId`). A key ending in `?` is left out of the line while its
#: value is None (RET's Status and Message appear only when the retrieval failed).
FORMATS: dict[str, tuple[str, ...]] = {
    "PRS": ("StatusCode", "DataStream", "TimeStep", "TimeBase", "Type", "ScheduleTime", "LastUpdate"),
    "RET": (
        "Monitored", "DataTransferId", "DestinationName", "DestinationType", "FileName", "FileSize",
        "ScheduledTime", "StartTime", "MetaStream", "MetaType", "MetaTime", "TimeBase", "TimeStep", "Duration",
        "HostId", "HostLogin", "HostAddress", "TransferProtocol", "MoverName", "UserId", "RequestAddress",
        "DataOnlyDuration", "StandBy", "RemoteHost", "Status?", "Message?",
    ),
    "UPH": (
        "Monitored", "DataTransferId", "DestinationName", "DestinationType", "FileName", "FileSize",
        "MetaStream", "MetaType", "MetaTime", "Priority", "QueueTime", "RequeueCount", "ScheduledTime",
        "StartTime", "PutTime", "Duration", "DurationOnClose", "BytesSent", "StatusCode", "RetrievalTime",
        "TimeBase", "TimeStep", "FinishTime", "TransferProtocol", "TransferServer", "NetworkCode",
        "HostAddress", "PreSchedule", "ProxyHost", "Proxied", "SocketStatistics", "Compressed",
        "CompressedOnTheFly",
    ),
    "INH": (
        "Monitored", "DataTransferId", "DestinationName", "DestinationType", "FileName", "FileSize",
        "ScheduledTime", "StartTime", "MetaStream", "MetaType", "MetaTime", "TimeBase", "TimeStep", "Duration",
        "UserId", "CountryCode", "UserDescription", "BytesSent", "TransferProtocol", "TransferServer",
        "HostAddress", "Caller", "ExpiryTime", "FileSystem", "Action",
    ),
    "ERR": (
        "Monitored", "DataTransferId", "DestinationName", "DestinationType", "FileName", "FileSize",
        "ScheduledTime", "StartTime", "MetaStream", "MetaType", "MetaTime", "TimeBase", "TimeStep", "Duration",
        "UserId", "CountryCode", "BytesSent", "TransferProtocol", "TransferServer", "HostAddress", "Message",
    ),
    "CPY": (
        "Monitored", "DataTransferId", "DestinationName", "DestinationType", "FileName", "FileSize",
        "ScheduledTime", "StartTime", "MetaStream", "MetaType", "MetaTime", "TimeBase", "TimeStep", "Duration",
        "CountryCode", "Target", "TransferServer", "Caller", "ExpiryTime", "FileSystem", "Status", "Message",
        "Action",
    ),
}  # fmt: skip


def attribute(key: str) -> str:
    """The record attribute that holds the value of `key`: `DataTransferId` → `data_transfer_id`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key.rstrip("?")).lower()


# --- Records -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event-log line: a category and the values of its fields (`FORMATS` gives their order)."""

    CATEGORY: ClassVar[str] = ""

    def pairs(self) -> list[tuple[str, str]]:
        rendered = []
        for key in FORMATS[self.CATEGORY]:
            value = getattr(self, attribute(key))
            if value is None and key.endswith("?"):
                continue
            rendered.append((key.rstrip("?"), format_value(value)))
        return rendered

    def render(self) -> str:
        """The line, without its line break."""
        return ";".join([self.CATEGORY, *(f"{key}={value}" for key, value in self.pairs())])

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, kw_only=True)
class ProductStatusEvent(Event):
    """PRS: a product (a stream, type, time base and step) was announced, started or completed."""

    CATEGORY: ClassVar[str] = "PRS"
    status_code: str | None = None
    data_stream: str | None = None
    time_step: int | str | None = None
    time_base: datetime | str | None = None
    type: str | None = None
    schedule_time: datetime | None = None
    last_update: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class _TransferEvent(Event):
    """The values every per-transfer line has."""

    monitored: bool | None = None
    data_transfer_id: int | None = None
    destination_name: str | None = None
    destination_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    scheduled_time: datetime | None = None
    start_time: datetime | None = None
    meta_stream: str | None = None
    meta_type: str | None = None
    meta_time: str | None = None
    time_base: datetime | str | None = None
    time_step: int | str | None = None
    duration: timedelta | int | None = None


@dataclass(frozen=True, kw_only=True)
class RetrievalEvent(_TransferEvent):
    """RET: the retrieval of a registered file into the Data Store ended, well or not.

    `Status` and `Message` appear only when the retrieval failed, as in OpenECPDS: they are left out
    of the line while None, and come last.
    """

    CATEGORY: ClassVar[str] = "RET"
    host_id: str | None = None
    host_login: str | None = None
    host_address: str | None = None
    transfer_protocol: str | None = None
    mover_name: str | None = None
    user_id: str | None = None
    request_address: str | None = None
    data_only_duration: timedelta | int | None = None
    stand_by: bool | None = None
    remote_host: str | None = None
    status: bool | None = None
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class UploadHistoryEvent(_TransferEvent):
    """UPH: a dissemination attempt to a remote site ended (an ERR line is written instead on error)."""

    CATEGORY: ClassVar[str] = "UPH"
    priority: int | None = None
    queue_time: datetime | None = None
    requeue_count: int | None = None
    put_time: datetime | None = None
    duration_on_close: timedelta | int | None = None
    bytes_sent: int | None = None
    status_code: TransferStatus | str | None = None
    retrieval_time: datetime | None = None
    finish_time: datetime | None = None
    transfer_protocol: str | None = None
    transfer_server: str | None = None
    network_code: str | None = None
    host_address: str | None = None
    pre_schedule: bool | None = None
    proxy_host: str | None = None
    proxied: bool | None = None
    socket_statistics: str | None = None
    compressed: str | None = None
    compressed_on_the_fly: bool | None = None


@dataclass(frozen=True, kw_only=True)
class IncomingHistoryEvent(_TransferEvent):
    """INH: a file was pushed to pds, or downloaded from its Data Portal."""

    CATEGORY: ClassVar[str] = "INH"
    user_id: str | None = None
    country_code: str | None = None
    user_description: str | None = None
    bytes_sent: int | None = None
    transfer_protocol: str | None = None
    transfer_server: str | None = None
    host_address: str | None = None
    caller: str | None = None
    expiry_time: datetime | None = None
    file_system: int | str | None = None
    action: str | None = None


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(_TransferEvent):
    """ERR: a dissemination attempt failed; `message` says why."""

    CATEGORY: ClassVar[str] = "ERR"
    user_id: str | None = None
    country_code: str | None = None
    bytes_sent: int | None = None
    transfer_protocol: str | None = None
    transfer_server: str | None = None
    host_address: str | None = None
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReplicationEvent(_TransferEvent):
    """CPY: a file was replicated between movers (`replicate`) or to a continental mover (`proxy`)."""

    CATEGORY: ClassVar[str] = "CPY"
    country_code: str | None = None
    target: str | None = None
    transfer_server: str | None = None
    caller: str | None = None
    expiry_time: datetime | None = None
    file_system: int | str | None = None
    status: bool | None = None
    message: str | None = None
    action: str | None = None


RECORDS: tuple[type[Event], ...] = (
    ProductStatusEvent,
    RetrievalEvent,
    UploadHistoryEvent,
    IncomingHistoryEvent,
    ErrorEvent,
    ReplicationEvent,
)


def _check_records() -> None:
    """Each record holds exactly the values its format lists: a key added to a format without its
    attribute (or the reverse) fails at import, not in the middle of a transfer."""
    for record in RECORDS:
        held = {f.name for f in dataclasses.fields(record)}
        listed = {attribute(key) for key in FORMATS[record.CATEGORY]}
        if held != listed:
            raise TypeError(f"{record.__name__} holds {sorted(held ^ listed)} differently from FORMATS")


_check_records()


# --- From the catalog's entities ---------------------------------------------------------------
#
# What pds knows maps onto the OpenECPDS fields as follows; what it does not know (destination type,
# country code, network code, socket statistics, file system number, the top display's monitored
# flag) renders as `-` unless the caller passes it, except PreSchedule, false because pds has no such
# feature rather than not knowing.
#
#   ProxyHost      transfer.proxy_host: the continental mover's proxy host that sent it, else `-`
#   Proxied        whether a continental mover sent it (false when the main movers took it over)
#
#   FileName       the transfer's target (the path at the site, as OpenECPDS logs it)
#   ScheduledTime  transfer.scheduled_at    QueueTime  transfer.queued_at (both move on a retry)
#   StartTime      transfer.started_at      FinishTime transfer.finished_at
#   MetaStream     data_file.stream         MetaType   data_file.data_type
#   TimeBase       data_file.time_base, as a timestamp when it is an ISO time, else as given
#   MetaTime       data_file.meta["time"], else the hour of the time base ("00", "06", ...)
#   TimeStep       data_file.time_step
#   RetrievalTime  data_file.arrived_at (when the content became whole in the Data Store)
#   Duration       finish minus start when the caller gives no measured duration
#   TransferServer transfer.mover           HostAddress, TransferProtocol  the host's address, protocol


def _time_base(data_file: DataFile) -> datetime | str | None:
    """The time base as a time when it reads as one, so it renders like OpenECPDS's."""
    if not data_file.time_base:
        return None
    try:
        return datetime.fromisoformat(data_file.time_base)
    except ValueError:
        return data_file.time_base


def _meta_time(data_file: DataFile) -> str | None:
    given = data_file.meta.get("time")
    if given is not None:
        return str(given)
    base = _time_base(data_file)
    return f"{base.hour:02d}" if isinstance(base, datetime) else None


def _elapsed(transfer: DataTransfer) -> timedelta | None:
    if transfer.started_at is None or transfer.finished_at is None:
        return None
    return transfer.finished_at - transfer.started_at


def _data_file_fields(data_file: DataFile) -> dict[str, Any]:
    return {
        "file_size": data_file.size,
        "meta_stream": data_file.stream,
        "meta_type": data_file.data_type,
        "meta_time": _meta_time(data_file),
        "time_base": _time_base(data_file),
        "time_step": data_file.time_step,
    }


def _transfer_fields(
    transfer: DataTransfer, data_file: DataFile, destination: Destination, monitored: bool
) -> dict[str, Any]:
    return {
        "monitored": monitored,
        "data_transfer_id": transfer.id,
        "destination_name": destination.name,
        "file_name": transfer.target,
        **_data_file_fields(data_file),
        "scheduled_time": transfer.scheduled_at,
        "start_time": transfer.started_at,
    }


def prs_from(
    data_file: DataFile,
    *,
    status_code: str,
    schedule_time: datetime | None = None,
    last_update: datetime | None = None,
) -> ProductStatusEvent:
    """The PRS line for the product `data_file` belongs to; `status_code` is EXEC, DONE, ... as given."""
    return ProductStatusEvent(
        status_code=status_code,
        data_stream=data_file.stream,
        time_step=data_file.time_step,
        time_base=_time_base(data_file),
        type=data_file.data_type,
        schedule_time=schedule_time,
        last_update=last_update,
    )


def ret_from(
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    source: Host,
    *,
    start_time: datetime | None = None,
    duration: timedelta | int | None = None,
    data_only_duration: timedelta | int | None = None,
    mover_name: str | None = None,
    user_id: str | None = None,
    request_address: str | None = None,
    remote_host: str | None = None,
    error: str | None = None,
    monitored: bool = False,
    destination_type: str | None = None,
) -> RetrievalEvent:
    """The RET line once the retrieval of `data_file` from `source` ended; pass `error` if it failed.

    The transfer's own start and finish times are its dissemination's, so the retrieval's start and
    duration come from the caller. StandBy is whether the transfer waits in StandBy afterwards;
    RemoteHost is the source's address unless the caller knows the node that answered.
    """
    fields = _transfer_fields(transfer, data_file, destination, monitored)
    fields["start_time"] = start_time
    return RetrievalEvent(
        **fields,
        destination_type=destination_type,
        duration=duration,
        host_id=source.name,
        host_login=source.login or None,
        host_address=source.address or None,
        transfer_protocol=source.protocol,
        mover_name=mover_name or transfer.mover,
        user_id=user_id,
        request_address=request_address,
        data_only_duration=data_only_duration,
        stand_by=transfer.status == TransferStatus.STANDBY,
        remote_host=remote_host or source.address or None,
        status=False if error is not None else None,
        message=error,
    )


def uph_from(
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    host: Host,
    *,
    put_time: datetime | None = None,
    duration: timedelta | int | None = None,
    duration_on_close: timedelta | int | None = None,
    monitored: bool = False,
    destination_type: str | None = None,
    network_code: str | None = None,
    socket_statistics: str | None = None,
) -> UploadHistoryEvent:
    """The UPH line for a dissemination attempt of `transfer` to `host` that has ended.

    Without measured durations both Duration and DurationOnClose are the attempt's elapsed time (pds
    closes the remote file before it records the end). Compressed names the compression applied on the
    fly, `-` when the original was sent; pds compresses only on the fly, hence CompressedOnTheFly.
    """
    elapsed = _elapsed(transfer)
    return UploadHistoryEvent(
        monitored=monitored,
        data_transfer_id=transfer.id,
        destination_name=destination.name,
        destination_type=destination_type,
        file_name=transfer.target,
        file_size=data_file.size,
        meta_stream=data_file.stream,
        meta_type=data_file.data_type,
        meta_time=_meta_time(data_file),
        priority=transfer.priority,
        queue_time=transfer.queued_at,
        requeue_count=transfer.requeue_count,
        scheduled_time=transfer.scheduled_at,
        start_time=transfer.started_at,
        put_time=put_time,
        duration=duration if duration is not None else elapsed,
        duration_on_close=duration_on_close if duration_on_close is not None else elapsed,
        bytes_sent=transfer.bytes_sent,
        status_code=TransferStatus(transfer.status),  # its four-letter code (DONE), whatever the row holds
        retrieval_time=data_file.arrived_at,
        time_base=_time_base(data_file),
        time_step=data_file.time_step,
        finish_time=transfer.finished_at,
        transfer_protocol=host.protocol,
        transfer_server=transfer.mover,
        network_code=network_code,
        host_address=host.address or None,
        pre_schedule=False,
        proxy_host=transfer.proxy_host,
        proxied=transfer.proxy_host is not None,
        socket_statistics=socket_statistics,
        compressed=transfer.compression,
        compressed_on_the_fly=transfer.compression is not None,
    )


def err_from(
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    host: Host | None,
    *,
    message: str | None = None,
    duration: timedelta | int | None = None,
    user_id: str | None = None,
    monitored: bool = False,
    destination_type: str | None = None,
    country_code: str | None = None,
) -> ErrorEvent:
    """The ERR line for a failed dissemination attempt; the message defaults to the transfer's error.

    `host` is None when the attempt failed before a host was chosen.
    """
    elapsed = _elapsed(transfer)
    return ErrorEvent(
        **_transfer_fields(transfer, data_file, destination, monitored),
        destination_type=destination_type,
        duration=duration if duration is not None else elapsed,
        user_id=user_id,
        country_code=country_code,
        bytes_sent=transfer.bytes_sent,
        transfer_protocol=host.protocol if host is not None else None,
        transfer_server=transfer.mover,
        host_address=(host.address or None) if host is not None else None,
        message=message if message is not None else transfer.error,
    )


def inh_from(
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    *,
    action: str,
    transfer_protocol: str,
    transfer_server: str | None = None,
    client_address: str | None = None,
    user_id: str | None = None,
    bytes_sent: int | None = None,
    start_time: datetime | None = None,
    duration: timedelta | int | None = None,
    caller: str | None = None,
    monitored: bool = False,
    destination_type: str | None = None,
    country_code: str | None = None,
    user_description: str | None = None,
    file_system: int | str | None = None,
) -> IncomingHistoryEvent:
    """The INH line for a push into pds (`action="upload"`) or a portal download (`"download"`).

    The portal, not the transfer, knows the protocol, the client's address and the user, so they are
    the caller's. BytesSent defaults to the file's size, the usual case of a whole push or download.
    """
    fields = _transfer_fields(transfer, data_file, destination, monitored)
    fields["start_time"] = start_time
    return IncomingHistoryEvent(
        **fields,
        destination_type=destination_type,
        duration=duration,
        user_id=user_id,
        country_code=country_code,
        user_description=user_description,
        bytes_sent=bytes_sent if bytes_sent is not None else data_file.size,
        transfer_protocol=transfer_protocol,
        transfer_server=transfer_server,
        host_address=client_address,
        caller=caller,
        expiry_time=transfer.expires_at,
        file_system=file_system,
        action=action,
    )


def cpy_from(
    transfer: DataTransfer,
    data_file: DataFile,
    destination: Destination,
    *,
    source: str,
    target: str,
    ok: bool,
    message: str | None = None,
    action: str = "replicate",
    start_time: datetime | None = None,
    duration: timedelta | int | None = None,
    caller: str | None = None,
    monitored: bool = False,
    destination_type: str | None = None,
    country_code: str | None = None,
    file_system: int | str | None = None,
) -> ReplicationEvent:
    """The CPY line for a replica of `data_file` made from store location or mover `source` to `target`.

    `action` is `replicate` between pds's own locations and `proxy` towards a continental mover.
    """
    fields = _transfer_fields(transfer, data_file, destination, monitored)
    fields["start_time"] = start_time
    return ReplicationEvent(
        **fields,
        destination_type=destination_type,
        duration=duration,
        country_code=country_code,
        target=target,
        transfer_server=source,
        caller=caller,
        expiry_time=transfer.expires_at,
        file_system=file_system,
        status=ok,
        message=message,
        action=action,
    )


# --- Writing -----------------------------------------------------------------------------------


class EventLog:
    """Appends event lines to a file or a text stream, one whole line per write, or drops them.

    Movers run transfers in threads and each ends with a line, so writes hold a lock and a line goes
    out in one `write` call, then is flushed: a crashed process loses no line it wrote (a lost machine
    may, since lines are not fsynced). Files are opened in append mode, so several processes can share
    one file as OpenECPDS's movers do. A failing destination (full disk) is reported through `logging`
    and does not fail the operation being logged.
    """

    def __init__(self, stream: TextIO | None, *, owns_stream: bool = False, path: Path | None = None) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        self._lock = threading.Lock()
        self.path = path
        """The file written, None for a stream or no log."""

    @classmethod
    def open(cls, target: str | os.PathLike[str] | None) -> EventLog:
        """A log at `target`: a file path (parents created), `-` for standard output, None or "" for none."""
        if target is None or str(target) == "":
            return cls(None)
        if str(target) == "-":
            return cls(sys.stdout)
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8", newline="\n"), owns_stream=True, path=path)

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, event: Event) -> None:
        line = event.render()
        try:
            self.write_lines([line])
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            logger.warning("event log write failed (%s): %s", exc, line)

    def write_lines(self, lines: list[str]) -> None:
        """Append rendered lines in one write, then flush; raise OSError (or ValueError, closed) on failure,
        so that a caller that must not lose them (the outbox) keeps them for another try."""
        if self._stream is None or not lines:
            return
        text = "".join(line + "\n" for line in lines)
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def tail(self, max_bytes: int = 8 << 20) -> set[str]:
        """The whole lines among the file's last `max_bytes` (empty for a stream): what an outbox
        publisher checks a line against before writing it a second time."""
        if self.path is None:
            return set()
        with self._lock:
            try:
                with self.path.open("rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - max_bytes))
                    data = f.read()
            except FileNotFoundError:
                return set()
        lines = data.decode("utf-8", errors="replace").split("\n")
        if len(data) >= max_bytes:
            lines = lines[1:]  # the first may be cut
        return set(lines)

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self._owns_stream:
                self._stream.close()
            self._stream = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
