"""Data users' credentials: salted scrypt password hashes and API tokens stored as SHA-256."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlmodel import Session, select

from catalog.errors import NotFound
from catalog.models import DataUser

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), n=_N, r=_R, p=_P)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def hash_token(token: str) -> str:
    # Tokens are long random strings, so a fast hash is enough and lets us look them up by hash.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "pds_" + secrets.token_urlsafe(32)


def authenticate_password(session: Session, login: str, password: str) -> DataUser | None:
    user = session.get(DataUser, login)
    if user is None or not user.active or not verify_password(password, user.password_hash):
        return None
    return user


def authenticate_token(session: Session, token: str) -> DataUser | None:
    user = session.exec(select(DataUser).where(DataUser.token_hash == hash_token(token))).first()
    if user is None or not user.active:
        return None
    return user


def ensure_user(session: Session, login: str, password: str, *, is_admin: bool = False) -> DataUser:
    """Create the user if missing (an existing user's password is left alone)."""
    user = session.get(DataUser, login)
    if user is None:
        user = DataUser(login=login, password_hash=hash_password(password), is_admin=is_admin)
        session.add(user)
        session.flush()
    return user


def issue_token(session: Session, login: str) -> str:
    """Give the user a new API token (replacing any old one) and return it; only its hash is kept."""
    user = session.get(DataUser, login)
    if user is None:
        raise NotFound(f"no data user {login!r}")
    token = new_token()
    user.token_hash = hash_token(token)
    session.add(user)
    return token
