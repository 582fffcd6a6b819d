"""Managing data users for the Data Portal: accounts, grants, policies, SSH keys (what admins do).

Passwords are kept as scrypt hashes (`catalog.users`). The S3 secret access key cannot be: SigV4 signs
with the secret itself, so the server must read it back. It is kept encrypted (Fernet: AES-128-CBC +
HMAC-SHA256) under a key derived from `PDS_PORTAL_SECRET_KEY`, so a copy of the database alone does not
reveal it; it is shown once, when generated.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, col, select

from catalog.errors import Conflict, InvalidInput, NotFound
from catalog.models import NAME_PATTERN, DataUser, Destination
from catalog.portal_models import (
    DataUserKey,
    Operation,
    PortalAccount,
    PortalGrant,
    PortalPolicy,
    PortalPolicyDestination,
    format_operations,
    parse_operations,
)
from catalog.users import hash_password

_KEY_LINE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")


@dataclass
class DataUserSpec:
    """What an administrator says about a data user (create or change)."""

    login: str
    password: str | None = None
    is_admin: bool = False
    active: bool = True
    description: str = ""
    country_code: str = ""
    upload_quota_bytes: int | None = None
    download_quota_bytes: int | None = None
    quota_period_seconds: int = 86400
    max_connections: int | None = None
    ssh_keys: list[str] = field(default_factory=list)


def _check_login(login: str) -> None:
    if not re.match(NAME_PATTERN, login):
        raise InvalidInput(f"login {login!r} must be letters, digits, '_', '.', '-' (at most 64)")


def _check_quotas(spec: DataUserSpec) -> None:
    for name in ("upload_quota_bytes", "download_quota_bytes"):
        value = getattr(spec, name)
        if value is not None and value < 0:
            raise InvalidInput(f"{name} must not be negative")
    if spec.quota_period_seconds < 1:
        raise InvalidInput("quota_period_seconds must be at least 1")
    if spec.max_connections is not None and spec.max_connections < 1:
        raise InvalidInput("max_connections must be at least 1")


def check_public_key(line: str) -> str:
    line = line.strip()
    if not _KEY_LINE.match(line):
        raise InvalidInput("an SSH public key must be one OpenSSH line such as 'ssh-ed25519 AAAA... comment'")
    return line


def create_data_user(session: Session, spec: DataUserSpec) -> DataUser:
    _check_login(spec.login)
    _check_quotas(spec)
    if session.get(DataUser, spec.login) is not None:
        raise Conflict(f"data user {spec.login!r} already exists")
    if not spec.password:
        raise InvalidInput("a new data user needs a password")
    keys = [check_public_key(k) for k in spec.ssh_keys]
    user = DataUser(
        login=spec.login, password_hash=hash_password(spec.password), is_admin=spec.is_admin, active=spec.active
    )
    session.add(user)
    session.flush()
    session.add(account_from(spec))
    for key in keys:
        session.add(DataUserKey(login=spec.login, public_key=key))
    session.flush()
    return user


def account_from(spec: DataUserSpec) -> PortalAccount:
    return PortalAccount(
        login=spec.login,
        description=spec.description,
        country_code=spec.country_code,
        upload_quota_bytes=spec.upload_quota_bytes,
        download_quota_bytes=spec.download_quota_bytes,
        quota_period_seconds=spec.quota_period_seconds,
        max_connections=spec.max_connections,
    )


def account(session: Session, login: str) -> PortalAccount:
    """The user's portal settings (defaults for a user made before the portal, such as the admin)."""
    found = session.get(PortalAccount, login)
    return found if found is not None else PortalAccount(login=login)


def get_data_user(session: Session, login: str) -> DataUser:
    user = session.get(DataUser, login)
    if user is None:
        raise NotFound(f"no data user {login!r}")
    return user


def update_data_user(session: Session, login: str, changes: dict[str, Any]) -> DataUser:
    user = get_data_user(session, login)
    acc = session.get(PortalAccount, login) or PortalAccount(login=login)
    for name, value in changes.items():
        if name == "password":
            if not value:
                raise InvalidInput("the password must not be empty")
            user.password_hash = hash_password(value)
        elif name in ("is_admin", "active"):
            setattr(user, name, bool(value))
        elif name in PortalAccount.model_fields and name not in ("login", "s3_secret"):
            setattr(acc, name, value)
        else:
            raise InvalidInput(f"unknown data user setting {name!r}")
    _check_quotas(
        DataUserSpec(
            login,
            upload_quota_bytes=acc.upload_quota_bytes,
            download_quota_bytes=acc.download_quota_bytes,
            quota_period_seconds=acc.quota_period_seconds,
            max_connections=acc.max_connections,
        )
    )
    session.add(user)
    session.add(acc)
    session.flush()
    return user


def delete_data_user(session: Session, login: str) -> None:
    user = get_data_user(session, login)
    for model in (PortalGrant, DataUserKey, PortalAccount):
        for row in session.exec(select(model).where(model.login == login)).all():
            session.delete(row)
    # Its grants, keys and account go first: the ORM does not know they hang on the user, and would
    # otherwise delete the user first and find them already gone by the database's cascade.
    session.flush()
    session.delete(user)
    session.flush()


def add_key(session: Session, login: str, public_key: str) -> DataUserKey:
    get_data_user(session, login)
    key = DataUserKey(login=login, public_key=check_public_key(public_key))
    session.add(key)
    session.flush()
    return key


def public_keys(session: Session, login: str) -> list[str]:
    return [k.public_key for k in session.exec(select(DataUserKey).where(DataUserKey.login == login)).all()]


# --- Grants and policies -----------------------------------------------------------------------


def grant(
    session: Session, login: str, operations: str, *, destination: str | None = None, policy: str | None = None
) -> PortalGrant:
    """Let `login` do `operations` at a destination or a policy's destinations (replacing a grant there)."""
    get_data_user(session, login)
    if (destination is None) == (policy is None):
        raise InvalidInput("a grant names a destination or a policy, exactly one")
    if destination is not None and session.get(Destination, destination) is None:
        raise NotFound(f"no destination {destination!r}")
    if policy is not None and session.get(PortalPolicy, policy) is None:
        raise NotFound(f"no policy {policy!r}")
    try:
        ops = parse_operations(operations)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    existing = session.exec(
        select(PortalGrant).where(
            PortalGrant.login == login,
            PortalGrant.destination_name == destination,
            PortalGrant.policy_name == policy,
        )
    ).first()
    row = existing or PortalGrant(login=login, destination_name=destination, policy_name=policy, operations="")
    row.operations = format_operations(ops)
    session.add(row)
    session.flush()
    return row


def revoke(session: Session, login: str, *, destination: str | None = None, policy: str | None = None) -> None:
    rows = session.exec(
        select(PortalGrant).where(
            PortalGrant.login == login,
            PortalGrant.destination_name == destination,
            PortalGrant.policy_name == policy,
        )
    ).all()
    if not rows:
        raise NotFound(f"data user {login!r} has no grant on {destination or policy!r}")
    for row in rows:
        session.delete(row)
    session.flush()


def grants(session: Session, login: str) -> list[PortalGrant]:
    return list(session.exec(select(PortalGrant).where(PortalGrant.login == login).order_by(col(PortalGrant.id))))


def create_policy(session: Session, name: str, destinations: list[str], comment: str = "") -> PortalPolicy:
    _check_login(name)
    if session.get(PortalPolicy, name) is not None:
        raise Conflict(f"policy {name!r} already exists")
    policy = PortalPolicy(name=name, comment=comment)
    session.add(policy)
    session.flush()
    for destination in destinations:
        add_to_policy(session, name, destination)
    return policy


def add_to_policy(session: Session, policy: str, destination: str) -> None:
    if session.get(PortalPolicy, policy) is None:
        raise NotFound(f"no policy {policy!r}")
    if session.get(Destination, destination) is None:
        raise NotFound(f"no destination {destination!r}")
    if session.get(PortalPolicyDestination, (policy, destination)) is None:
        session.add(PortalPolicyDestination(policy_name=policy, destination_name=destination))
        session.flush()


def policy_destinations(session: Session, policy: str) -> list[str]:
    rows = session.exec(select(PortalPolicyDestination).where(PortalPolicyDestination.policy_name == policy))
    return sorted(r.destination_name for r in rows)


def reachable_destinations(session: Session, login: str) -> dict[str, frozenset[Operation]]:
    """Every destination the user may reach and the operations allowed there (grants add up)."""
    reach: dict[str, set[Operation]] = {}
    for row in grants(session, login):
        ops = parse_operations(row.operations)
        names = [row.destination_name] if row.destination_name else policy_destinations(session, row.policy_name or "")
        for name in names:
            reach.setdefault(name, set()).update(ops)
    return {name: frozenset(ops) for name, ops in reach.items()}


# --- The S3 secret access key ------------------------------------------------------------------


def _fernet(server_key: str) -> Fernet:
    if not server_key:
        raise InvalidInput("the portal has no secret key to protect S3 secrets: set PDS_PORTAL_SECRET_KEY")
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"pds-portal-s3:" + server_key.encode()).digest()))


def issue_s3_secret(session: Session, login: str, server_key: str) -> str:
    """A new S3 secret access key for the user (replacing the old one); returned once, kept encrypted."""
    get_data_user(session, login)
    secret = secrets.token_urlsafe(30)
    acc = session.get(PortalAccount, login) or PortalAccount(login=login)
    acc.s3_secret = _fernet(server_key).encrypt(secret.encode()).decode()
    session.add(acc)
    session.flush()
    return secret


def s3_secret(session: Session, login: str, server_key: str) -> str | None:
    """The user's S3 secret in clear, for verifying a signature; None if the user has none."""
    acc = session.get(PortalAccount, login)
    user = session.get(DataUser, login)
    if acc is None or acc.s3_secret is None or user is None or not user.active:
        return None
    try:
        return _fernet(server_key).decrypt(acc.s3_secret.encode()).decode()
    except InvalidToken:
        return None


def describe(session: Session, login: str) -> dict[str, Any]:
    """A data user as the API and the monitor show it: role, state, account settings, whether it has
    an S3 secret (never the secret), its SSH keys and its grants."""
    user = get_data_user(session, login)
    acc = account(session, login)
    return {
        "login": user.login,
        "is_admin": user.is_admin,
        "active": user.active,
        **acc.model_dump(mode="json", exclude={"login", "s3_secret"}),
        "has_s3_secret": acc.s3_secret is not None,
        "ssh_keys": public_keys(session, login),
        "grants": [
            {"destination": g.destination_name, "policy": g.policy_name, "operations": g.operations}
            for g in grants(session, login)
        ],
    }
