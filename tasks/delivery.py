"""One data transfer as the mover executes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blocks.base import HostBlock
from catalog.store import DataStore


@dataclass(frozen=True)
class Delivery:
    """One data transfer as the mover executes it: which object goes where."""

    transfer_id: int
    store_key: str
    size: int
    md5: str
    host: HostBlock
    remote_path: str
    """Final path on the host's filesystem."""
    compression: str | None = None
    """The destination's compression; the file may still go uncompressed if that is smaller."""
    interrupted_attempt_at: datetime | None = None
    """Set when a crashed mover's attempt may already have delivered the file (see `already_there`)."""
    source: DataStore | None = None
    """Where the bytes are read from: a continental mover's store location; None: the Data Store."""
    attempt: int | None = None
    """The attempt's number (its fencing token): the mover's writes apply only while it is current."""
