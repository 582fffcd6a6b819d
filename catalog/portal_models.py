"""The Data Portal's tables: what each data user may reach, with which operations, within which quotas.

A data user (`catalog.models.DataUser`) reaches a destination directly (a grant naming the destination)
or through a policy, a named group of destinations (a grant naming the policy). Each grant carries the
operations allowed there. The portal's view of a destination is its data transfers, so nothing here
duplicates files: usage rows only count bytes for the rolling quotas, and directory rows remember empty
directories that clients create before they upload into them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from catalog.models import UTCDateTime, utcnow


class Operation(StrEnum):
    """What a data user may do at a destination (OpenECPDS's portal operations)."""

    GET = "get"
    PUT = "put"
    DELETE = "delete"
    DIR = "dir"
    MKDIR = "mkdir"
    RMDIR = "rmdir"
    RENAME = "rename"
    SIZE = "size"
    MTIME = "mtime"
    OPERATE = "operate"
    """Not a portal operation: makes the grantee an operator of the destination (`catalog.access`)."""


ALL_OPERATIONS: frozenset[Operation] = frozenset(Operation) - {Operation.OPERATE}
"""What `all` grants: every portal operation (operating a destination is granted by name)."""


def parse_operations(text: str) -> frozenset[Operation]:
    """`get,put,dir` (or `all`, or `all,operate`) → the operations; an unknown name is an error."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if "all" in names:
        return ALL_OPERATIONS | parse_operations(",".join(n for n in names if n != "all"))
    unknown = [n for n in names if n not in Operation.__members__.values()]
    if unknown:
        known = ", ".join(o.value for o in Operation)
        raise ValueError(f"unknown operation(s) {', '.join(unknown)}; known: {known} (or all)")
    return frozenset(Operation(n) for n in names)


def format_operations(operations: frozenset[Operation]) -> str:
    return ",".join(o.value for o in Operation if o in operations)


class PortalAccount(SQLModel, table=True):
    """A data user's portal settings: description, quotas, connections, S3 secret."""

    __tablename__ = "portal_account"
    login: str = Field(foreign_key="data_user.login", primary_key=True, ondelete="CASCADE")
    description: str = ""
    country_code: str = Field(default="", max_length=8)
    upload_quota_bytes: int | None = Field(default=None, ge=0, sa_type=sa.BigInteger)
    """Bytes the user may upload per `quota_period_seconds` (rolling); None: no limit."""
    download_quota_bytes: int | None = Field(default=None, ge=0, sa_type=sa.BigInteger)
    quota_period_seconds: int = Field(default=86400, ge=1)
    max_connections: int | None = Field(default=None, ge=1)
    """Sessions (FTP, SFTP) or requests (HTTPS, S3) at once; None: no limit."""
    s3_secret: str | None = None
    """The S3 secret access key, encrypted with the server's portal key (SigV4 needs it readable)."""


class PortalPolicy(SQLModel, table=True):
    """A named group of destinations that grants can name instead of each destination."""

    __tablename__ = "portal_policy"
    name: str = Field(primary_key=True, max_length=64)
    comment: str = ""


class PortalPolicyDestination(SQLModel, table=True):
    __tablename__ = "portal_policy_destination"
    policy_name: str = Field(foreign_key="portal_policy.name", primary_key=True, ondelete="CASCADE")
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")


class PortalGrant(SQLModel, table=True):
    """A data user may do `operations` at one destination, or at every destination of one policy."""

    __tablename__ = "portal_grant"
    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(foreign_key="data_user.login", index=True, ondelete="CASCADE")
    destination_name: str | None = Field(default=None, foreign_key="destination.name", ondelete="CASCADE")
    policy_name: str | None = Field(default=None, foreign_key="portal_policy.name", ondelete="CASCADE")
    operations: str
    """Comma-separated `Operation` values."""


class DataUserKey(SQLModel, table=True):
    """An SSH public key a data user logs in with (SFTP), as one OpenSSH `authorized_keys` line."""

    __tablename__ = "data_user_key"
    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(foreign_key="data_user.login", index=True, ondelete="CASCADE")
    public_key: str
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class PortalUsage(SQLModel, table=True):
    """Bytes one upload or download moved, for the rolling quotas."""

    __tablename__ = "portal_usage"
    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(index=True)
    direction: str = Field(max_length=8)
    """`upload` or `download`."""
    bytes: int = Field(default=0, sa_type=sa.BigInteger)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))


class PortalDirectory(SQLModel, table=True):
    """An empty directory a data user made (directories with files in them need no row)."""

    __tablename__ = "portal_directory"
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    path: str = Field(primary_key=True)
