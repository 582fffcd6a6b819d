"""The entities of pds as SQLModel tables, with OpenECPDS's names.

Each table has a `*Public` twin for what the API returns (never secrets) where callers need one.
Times are stored and returned in UTC, timezone-aware (`UTCDateTime`), because a scheduler that mixes
naive and aware times is wrong twice a year.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel

from catalog.statuses import TransferStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Sizes and byte counts: 64-bit on PostgreSQL, where INTEGER stops at 2 GiB. SQLite's INTEGER holds
#: 64 bits already, so its tables keep the type they were made with (no rebuild of the queue's table).
BYTES = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class HostKind(StrEnum):
    DISSEMINATION = "dissemination"
    ACQUISITION = "acquisition"
    SOURCE = "source"
    REPLICATION = "replication"
    BACKUP = "backup"
    PROXY = "proxy"


class OnHostFailure(StrEnum):
    NEXT_AND_STAY = "next_and_stay"
    NEXT_AND_RETRY = "next_and_retry"


def _enum(enum: type[StrEnum]) -> Any:
    """Stored as its value in a VARCHAR (no database enum type to migrate), read back as the member."""
    return sa.Enum(enum, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


#: Names of destinations, hosts and users: safe in paths, URLs and log lines.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


# --- Destination ------------------------------------------------------------------------------


class DestinationBase(SQLModel):
    name: str = Field(primary_key=True, max_length=64)
    comment: str = ""
    active: bool = True
    """False when the destination is on hold: its scheduler claims nothing."""
    max_parallel_transfers: int = Field(default=4, ge=1, le=1000)
    max_starts: int = Field(default=3, ge=1, le=1000)
    """Attempts per transfer before it fails."""
    start_frequency_seconds: int = Field(default=60, ge=0)
    """Delay before a failed attempt is tried again (its queue time is pushed back by this)."""
    max_requeue: int = Field(default=3, ge=0)
    on_host_failure: OnHostFailure = Field(default=OnHostFailure.NEXT_AND_STAY, sa_type=_enum(OnHostFailure))
    lifetime_seconds: int | None = Field(default=None, ge=1)
    """Transfers not done this long after queueing fail with "not transferred before expiration"."""
    compression: str | None = None
    """Compress on the fly before sending (gzip, bzip2, lzma, zstd, lz4, snappy); the original is sent
    when compression would not make the file smaller."""
    reset_frequency_seconds: int = Field(default=600, ge=0)
    """With next_and_stay: how long transfers keep going to the fallback host that last worked before
    the primary is tried first again."""
    max_failed_passes: int = Field(default=0, ge=0)
    """Passes over every host that may fail in a row before the destination is put on hold (0: never)."""
    window_start: str | None = Field(default=None, max_length=5)
    """Active time window, "HH:MM" in UTC: transfers start only between window_start and window_end
    (a window may wrap past midnight). Unset: always active."""
    window_end: str | None = Field(default=None, max_length=5)
    mqtt_topic: str | None = None
    """Publish a notification here when a transfer is Done (needs PDS_MQTT_URL); `$destination` and
    `$name` expand."""
    mqtt_qos: int = Field(default=1, ge=0, le=2)
    mqtt_retain: bool = True
    """Retained, so a subscriber that connects after the publish still gets the latest file."""
    mqtt_expiry_seconds: int | None = Field(default=None, ge=1)
    mqtt_payload: str = Field(default="pds", max_length=8)
    """`pds` (compact JSON) or `wis2` (a WIS2 Notification Message)."""
    mqtt_on_arrival: bool = False
    """Also publish a notification when a file arrives on the destination (an upload through the
    Data Portal or a retrieval completes), not only when a transfer is Done; needs `mqtt_topic`."""


class DestinationState(SQLModel, table=True):
    """What the scheduler remembers about a destination between transfers (not configuration)."""

    __tablename__ = "destination_state"
    name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    current_host: str | None = None
    """next_and_stay: the fallback host new transfers start on, since `current_host_since`."""
    current_host_since: datetime | None = _time(nullable=True)
    failed_passes: int = 0
    """Passes over every host that failed in a row; reset by any success."""
    hold_reason: str | None = None
    """Why the scheduler put the destination on hold (None when an operator did, or it is active)."""


class Destination(DestinationBase, table=True):
    __tablename__ = "destination"
    created_at: datetime = _created()


class DestinationHistory(SQLModel, table=True):
    """One change of a destination (held, restarted, edited, a host or an alias added or removed):
    who, when, what. Its rows go with the destination."""

    __tablename__ = "destination_history"
    id: int | None = Field(default=None, primary_key=True)
    destination_name: str = Field(foreign_key="destination.name", index=True, ondelete="CASCADE")
    action: str = Field(max_length=32)
    at: datetime = _created()
    by: str
    """The user (or the mover, for a hold after failed passes)."""
    reason: str = ""


class DestinationHistoryPublic(SQLModel):
    action: str
    at: datetime
    by: str
    reason: str


class DestinationCreate(DestinationBase):
    pass


class DestinationHost(SQLModel, table=True):
    """A host serving a destination, in order: rank 0 is the primary, then the fallbacks."""

    __tablename__ = "destination_host"
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    host_name: str = Field(foreign_key="host.name", primary_key=True, ondelete="CASCADE")
    kind: HostKind = Field(primary_key=True, sa_type=_enum(HostKind))
    rank: int = 0


class DestinationAlias(SQLModel, table=True):
    """Transfers queued to `destination_name` are queued to `alias_name` too (if `pattern` matches)."""

    __tablename__ = "destination_alias"
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    alias_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    pattern: str | None = None
    """A regular expression on the target; None aliases every transfer."""
    priority: int | None = Field(default=None, ge=0, le=99)
    delay_seconds: int = Field(default=0, ge=0)
    replacement: str | None = None
    """With `pattern`: the alias's target is `re.sub(pattern, replacement, target)` (`\\1` groups work)."""


# --- Host --------------------------------------------------------------------------------------


class HostBase(SQLModel):
    name: str = Field(primary_key=True, max_length=64)
    kind: HostKind = Field(default=HostKind.DISSEMINATION, sa_type=_enum(HostKind))
    protocol: str = Field(max_length=16)
    """A transfer module of the block registry: file, sftp, s3, …"""
    address: str = ""
    """Where the host is: a directory for `file`, host[:port] for sftp, an endpoint URL for s3."""
    directory: str = ""
    """Directory template where files land; `$destination`, `$target`, `$date{%Y%m%d}` … expand."""
    login: str = ""
    comment: str = ""
    active: bool = True


class Host(HostBase, table=True):
    __tablename__ = "host"
    password: str = ""
    """The secret (password, secret key); never returned by the API, never logged."""
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Protocol options (port, region, key file, …); values under `secret_*` keys are hidden too."""
    created_at: datetime = _created()


class HostCreate(HostBase):
    password: str = ""
    options: dict[str, Any] = Field(default_factory=dict)


class HostPublic(HostBase):
    options: dict[str, Any] = Field(default_factory=dict)
    has_password: bool = False


# --- Data user ---------------------------------------------------------------------------------


class DataUser(SQLModel, table=True):
    """A person or program that uses the API and the portal."""

    __tablename__ = "data_user"
    login: str = Field(primary_key=True, max_length=64)
    password_hash: str = ""
    token_hash: str | None = Field(default=None, index=True)
    is_admin: bool = False
    active: bool = True
    created_at: datetime = _created()


# --- Data file ---------------------------------------------------------------------------------


class DataFileBase(SQLModel):
    name: str
    """The name the provider gave the product."""
    size: int | None = Field(default=None, sa_type=BYTES)
    adler32: str | None = Field(default=None, max_length=8)
    md5: str | None = Field(default=None, max_length=32)
    sha512: str | None = Field(default=None, max_length=128)
    """Hex SHA-512 of the content, the integrity of WIS2 notifications (None for files stored before
    it was taken)."""
    compression: str | None = None
    stream: str | None = None
    data_type: str | None = None
    time_base: str | None = None
    time_step: str | None = None


class DataFile(DataFileBase, table=True):
    """One product in the Data Store."""

    __tablename__ = "data_file"
    id: int | None = Field(default=None, primary_key=True)
    store_key: str | None = Field(default=None, unique=True)
    """The object's key in the Data Store; set once the content is whole."""
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _created()
    arrived_at: datetime | None = _time(nullable=True)

    @property
    def etag(self) -> str | None:
        return f'"{self.md5}"' if self.md5 else None


class DataFilePublic(DataFileBase):
    id: int
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    arrived_at: datetime | None = None


# --- Data transfer -----------------------------------------------------------------------------


class DataTransfer(SQLModel, table=True):
    """One data file to one destination."""

    __tablename__ = "data_transfer"
    __table_args__ = (
        sa.Index("ix_data_transfer_queue", "status", "priority", "queued_at", "id"),
        # The retriever's queue: Preset transfers in queue order, those waiting for a request apart,
        # so a million files registered without retrieval are never read by its claims.
        sa.Index("ix_data_transfer_retrieval", "status", "awaiting_request", "priority", "queued_at", "id"),
        # A mover's claim, destination by destination (`catalog.transfers._queue_heads`).
        sa.Index("ix_data_transfer_destination_queue", "destination_name", "status", "priority", "queued_at", "id"),
        # Expiry, checked before every claim: the waiting transfers whose lifetime ended, not all of them.
        sa.Index("ix_data_transfer_expiry", "status", "expires_at"),
        # A destination's transfers by target: the portal's lookups and its key-ordered listings
        # (it serves lookups by destination alone too, as its leading column).
        sa.Index("ix_data_transfer_destination_target", "destination_name", "target"),
    )
    id: int | None = Field(default=None, primary_key=True)
    data_file_id: int = Field(foreign_key="data_file.id", index=True)
    destination_name: str = Field(foreign_key="destination.name")
    target: str
    """Path of the file at the destination, relative to the host's directory."""
    status: TransferStatus = Field(sa_type=sa.String(16))
    priority: int = Field(default=99, ge=0, le=99)
    queued_at: datetime = _created()
    scheduled_at: datetime = _created()
    """Not claimed before this time (delays, retries)."""
    expires_at: datetime | None = _time(nullable=True)
    awaiting_request: bool = False
    """A transfer of a file registered without retrieval, Preset until a read asks for the file
    (`catalog.on_demand`): the retriever leaves it alone until then."""
    start_count: int = 0
    requeue_count: int = 0
    host_name: str | None = None
    """The host that served (or is serving) the last attempt."""
    next_host: str | None = None
    """The host the next attempt must use (a retry on the same host, or the next one of a failover
    pass); None: the destination's choice (the primary, or where next_and_stay stays)."""
    host_attempts: int = 0
    """Attempts on `next_host` so far in this pass (against the host's `retry_count`)."""
    pass_hosts_tried: int = 0
    """Hosts given up in the current pass over the destination's hosts; 0 starts a new pass (a start)."""
    mover: str | None = None
    proxy_host: str | None = None
    """The proxy host (continental mover) whose store location served the last attempt; None: the
    Data Store, by a main mover."""
    flow_run_id: str | None = None
    """The Prefect flow run of the last dispatch, for links from the monitor."""
    bytes_sent: int = Field(default=0, sa_type=BYTES)
    compression: str | None = None
    """The compression applied to what was sent (None: the original)."""
    sent_md5: str | None = None
    """MD5 of the bytes the site received (differs from the data file's when compressed)."""
    started_at: datetime | None = _time(nullable=True)
    finished_at: datetime | None = _time(nullable=True)
    error: str | None = None
    updated_at: datetime = _created()
    attempt: int = 0
    """The number of the latest attempt (each claim adds one): the fencing token every write of a
    mover about an attempt carries, so a late writer can neither record its outcome nor overwrite a
    newer attempt's."""


class TransferAttempt(SQLModel, table=True):
    """One attempt of a data transfer: which mover, flow run and host, when, how far, how it ended."""

    __tablename__ = "transfer_attempt"
    __table_args__ = (sa.UniqueConstraint("transfer_id", "number", name="uq_transfer_attempt"),)
    id: int | None = Field(default=None, primary_key=True)
    transfer_id: int = Field(foreign_key="data_transfer.id", index=True, ondelete="CASCADE")
    number: int
    mover: str
    host: str | None = None
    flow_run_id: str | None = None
    """The Prefect flow run (a dispatch) that ran this attempt."""
    task_run_id: str | None = None
    """The Prefect task run (a send) of the attempt: a dispatch runs several claims, each its own task runs."""
    started_at: datetime = _created()
    ended_at: datetime | None = _time(nullable=True)
    bytes_sent: int = Field(default=0, sa_type=BYTES)
    outcome: str | None = None
    """The status the attempt ended in (Done, Retry, Requeued, Failed, Stopped, Interrupted); None while it runs."""
    error: str | None = None


class AttemptPublic(SQLModel):
    number: int
    mover: str
    host: str | None
    flow_run_id: str | None
    task_run_id: str | None = None
    flow_run_url: str | None = None
    """The dispatch flow run in the Prefect UI."""
    task_run_url: str | None = None
    """The attempt's task run in the Prefect UI."""
    started_at: datetime
    ended_at: datetime | None
    bytes_sent: int
    outcome: str | None
    error: str | None


class TransferHistory(SQLModel, table=True):
    """One status change of a data transfer: who, when, why."""

    __tablename__ = "transfer_history"
    id: int | None = Field(default=None, primary_key=True)
    transfer_id: int = Field(foreign_key="data_transfer.id", index=True, ondelete="CASCADE")
    action: str
    from_status: str | None = None
    to_status: str
    at: datetime = _created()
    by: str
    reason: str = ""


class HistoryPublic(SQLModel):
    action: str
    from_status: str | None
    to_status: str
    at: datetime
    by: str
    reason: str


class DataTransferPublic(SQLModel):
    id: int
    data_file_id: int
    destination: str
    target: str
    status: str
    priority: int
    queued_at: datetime
    scheduled_at: datetime
    expires_at: datetime | None
    start_count: int
    requeue_count: int
    host: str | None
    mover: str | None
    proxy_host: str | None = None
    flow_run_id: str | None
    bytes_sent: int
    compression: str | None
    sent_md5: str | None
    size: int | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    history: list[HistoryPublic] = Field(default_factory=list)
    attempts: list[AttemptPublic] = Field(default_factory=list)


# --- Mover -------------------------------------------------------------------------------------


class Mover(SQLModel, table=True):
    """A running mover's lease: recovery interrupts only transfers of movers that stopped beating."""

    __tablename__ = "mover"
    name: str = Field(primary_key=True)
    started_at: datetime = _created()
    heartbeat_at: datetime = _created()
    machine: str = ""
    pid: int = 0
    proxy_host: str | None = None
    """The proxy host this mover serves as a continental mover; None: a main mover."""
