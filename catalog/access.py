"""Who may do what: the one authorisation model of the API, the monitor and the portal.

Four roles, from the least to the most trusted:

- **anonymous**: no credentials. Reads what is public (health, the STAC API, public proxied assets).
- **data user**: a login with grants. A grant names a destination (or a policy, a group of
  destinations) and the portal operations allowed there (`get`, `put`, `dir`, …, as OpenECPDS's
  portal has them). A data user sees only the destinations it is granted and their transfers, data
  files, registration groups and products — never a host, an address, a login or an option.
- **operator**: a data user whose grant at a destination includes `operate`. There it may act on
  transfers (requeue, stop, hold, …), hold and restart the destination, register files from the
  destination's hosts and mark products; it sees those hosts (without credentials).
- **administrator**: everything, configuration included (destinations, hosts, data users, policies,
  STAC collections, proxy settings).

Each route of the API names one `Permission` (the role it needs at least); the guard checks it
before any work. Whether the object a request names is within the caller's reach (a destination,
a transfer, a host) is then checked by `Access` before anything is read or written; what is out of
reach is answered as if it did not exist, so nobody learns the names of destinations they may not
see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.data_users import reachable_destinations
from catalog.errors import AccessDenied, NotFound
from catalog.models import DataTransfer, DataUser, DestinationHost
from catalog.portal_models import Operation


class Role(StrEnum):
    ANONYMOUS = "anonymous"
    DATA_USER = "data user"
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"


_RANK = {Role.ANONYMOUS: 0, Role.DATA_USER: 1, Role.OPERATOR: 2, Role.ADMINISTRATOR: 3}


class Permission(StrEnum):
    """What a route needs. The value is what the API documentation shows."""

    PUBLIC = "public"
    """Anyone, with or without credentials."""
    SIGNED_IN = "signed-in"
    """Any data user, about its own account (who am I, a new token)."""
    PORTAL = "portal"
    """A data user with the portal operation at the destination (checked by the portal itself)."""
    PROXY = "proxy"
    """The proxied collection's read policy (public, data users, groups; checked by the proxy)."""
    READ = "read"
    """Any data user; it sees only what lies within its grants."""
    READ_HOSTS = "read-hosts"
    """Operators (the hosts of the destinations they operate) and administrators."""
    OPERATE = "operate"
    """Operators at the destination the request acts on, and administrators."""
    CONFIGURE = "configure"
    """Administrators only."""
    MONITOR = "monitor"
    """A monitor session (cookie); each page shows what the viewer's access reaches."""

    @property
    def least_role(self) -> Role:
        return _LEAST_ROLE[self]


_LEAST_ROLE = {
    Permission.PUBLIC: Role.ANONYMOUS,
    Permission.PROXY: Role.ANONYMOUS,
    Permission.SIGNED_IN: Role.DATA_USER,
    Permission.PORTAL: Role.DATA_USER,
    Permission.READ: Role.DATA_USER,
    Permission.READ_HOSTS: Role.OPERATOR,
    Permission.OPERATE: Role.OPERATOR,
    Permission.CONFIGURE: Role.ADMINISTRATOR,
    Permission.MONITOR: Role.DATA_USER,
}


@dataclass(frozen=True)
class Access:
    """What one caller may reach, read from its grants when its request begins."""

    login: str | None
    role: Role
    granted: frozenset[str] = frozenset()
    """Destinations the caller is granted (any operation); unused for administrators."""
    operated: frozenset[str] = frozenset()
    """Destinations where the caller's grant includes `operate`."""
    _hosts: dict[str, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMINISTRATOR

    def has_role(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def allows(self, permission: Permission) -> bool:
        """Whether the caller's role is enough for the route at all (before any object is named)."""
        return self.has_role(permission.least_role)

    def refuse(self, permission: Permission) -> AccessDenied:
        who = self.login or "an anonymous caller"
        return AccessDenied(f"{who} ({self.role}) may not do this: it needs {_NEEDS[permission]}")

    # --- Destinations --------------------------------------------------------------------------

    def visible(self) -> frozenset[str] | None:
        """The destinations the caller may see; None: all of them."""
        return None if self.is_admin else self.granted

    def sees(self, destination: str) -> bool:
        return self.is_admin or destination in self.granted

    def operates(self, destination: str) -> bool:
        return self.is_admin or destination in self.operated

    def require_visible(self, destination: str, what: str = "destination") -> None:
        """Out of reach is answered as missing: the caller learns nothing of it."""
        if not self.sees(destination):
            raise NotFound(f"no {what} {destination!r}")

    def require_operator(self, destination: str) -> None:
        self.require_visible(destination)
        if not self.operates(destination):
            raise AccessDenied(f"{self.login} may not operate destination {destination!r}: its grant lacks 'operate'")

    # --- Transfers, data files, hosts ----------------------------------------------------------

    def transfer_destination(self, session: Session, transfer_id: int) -> str:
        """The destination of a transfer the caller may see, or NotFound."""
        destination = session.exec(select(DataTransfer.destination_name).where(DataTransfer.id == transfer_id)).first()
        if destination is None or not self.sees(destination):
            raise NotFound(f"no transfer {transfer_id}")
        return destination

    def require_data_file(self, session: Session, data_file_id: int) -> None:
        """A data file is visible when one of its transfers is."""
        if self.is_admin:
            return
        query = select(DataTransfer.id).where(
            DataTransfer.data_file_id == data_file_id, col(DataTransfer.destination_name).in_(self.granted)
        )
        if session.exec(query.limit(1)).first() is None:
            raise NotFound(f"no data file {data_file_id}")

    def hosts(self, session: Session) -> frozenset[str] | None:
        """The hosts the caller may see and use: those attached to a destination it operates."""
        if self.is_admin:
            return None
        if "hosts" not in self._hosts:
            rows = session.exec(
                select(DestinationHost.host_name).where(col(DestinationHost.destination_name).in_(self.operated))
            ).all()
            self._hosts["hosts"] = frozenset(rows)
        return self._hosts["hosts"]

    def require_host(self, session: Session, host: str) -> None:
        if not self.has_role(Role.OPERATOR):
            raise self.refuse(Permission.READ_HOSTS)
        reachable = self.hosts(session)
        if reachable is not None and host not in reachable:
            raise NotFound(f"no host {host!r}")

    def only_visible(self, column: sa.ColumnElement[str] | object) -> sa.ColumnElement[bool] | None:
        """A WHERE clause limiting `column` (a destination name) to what the caller sees; None: all."""
        visible = self.visible()
        if visible is None:
            return None
        return col(column).in_(sorted(visible))


_NEEDS = {
    Permission.PUBLIC: "nothing",
    Permission.PROXY: "the proxied collection's read policy",
    Permission.SIGNED_IN: "credentials",
    Permission.PORTAL: "a grant of the operation at the destination",
    Permission.READ: "credentials",
    Permission.READ_HOSTS: "an operator's grant ('operate') or administrator rights",
    Permission.OPERATE: "an operator's grant ('operate') at the destination or administrator rights",
    Permission.CONFIGURE: "administrator rights",
    Permission.MONITOR: "a monitor session",
}

ANONYMOUS = Access(None, Role.ANONYMOUS)


def access_of(session: Session, login: str) -> Access:
    """The caller's access as its grants say now (a revoked grant counts from the next request)."""
    user = session.get(DataUser, login)
    if user is None or not user.active:
        return ANONYMOUS
    if user.is_admin:
        return Access(login, Role.ADMINISTRATOR)
    reach = reachable_destinations(session, login)
    operated = frozenset(name for name, ops in reach.items() if Operation.OPERATE in ops)
    return Access(login, Role.OPERATOR if operated else Role.DATA_USER, frozenset(reach), operated)
