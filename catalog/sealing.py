"""Host credentials sealed at rest: a host's password and its `secret_*` options are kept encrypted
in the database when `PDS_HOST_SECRET_KEY` is set, and opened only where a connection is made.

Sealed values are Fernet tokens (AES-128-CBC + HMAC-SHA256) behind a `sealed:v1:` prefix, under a
key derived from `PDS_HOST_SECRET_KEY`. A copy of the database alone then gives no credential
away. Every process that connects to hosts (the API, movers, retrievers, continental movers) needs
the same key; `pds up` makes one at `<data_dir>/host-secret.key` on first start and hands it to its
processes. Without a key, values are stored as given (as before sealing existed), and values stored
before a key was set stay readable until `pds migrate` (or `pds up`) seals them.

Rotating the key: give every process the new key as `PDS_HOST_SECRET_KEY` and the old one in
`PDS_HOST_SECRET_KEY_PREVIOUS` (several, comma-separated), run `pds migrate` (it seals again under the
new key every value the old one sealed), then drop the old key. Values are opened with the current key
first and the previous ones after, so hosts keep working throughout.

The key comes from the environment directly, not through `Settings`, because blocks open secrets
for every connection and must not parse the whole configuration each time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, select

from catalog.errors import InvalidInput
from catalog.models import Host

PREFIX = "sealed:v1:"
SECRET_OPTION_PREFIX = "secret_"  # noqa: S105 — a key prefix, not a secret
KEY_VARIABLE = "PDS_HOST_SECRET_KEY"
PREVIOUS_KEYS_VARIABLE = "PDS_HOST_SECRET_KEY_PREVIOUS"


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"pds-host-secrets:" + key.encode()).digest()))


def _key() -> str:
    return os.environ.get(KEY_VARIABLE, "")


def _previous_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(PREVIOUS_KEYS_VARIABLE, "").split(",") if k.strip()]


def _open(value: str, *, host: str) -> tuple[str, bool]:
    """The clear text of a sealed `value`, and whether the current key sealed it."""
    token = value[len(PREFIX) :].encode()
    key = _key()
    if not key:
        raise InvalidInput(f"host {host}'s credentials are sealed: set {KEY_VARIABLE} to the key that sealed them")
    for i, candidate in enumerate([key, *_previous_keys()]):
        try:
            return _fernet(candidate).decrypt(token).decode(), i == 0
        except InvalidToken:
            continue
    raise InvalidInput(
        f"host {host}'s credentials were sealed with another {KEY_VARIABLE} than this process has"
        f" (a key being rotated out goes in {PREVIOUS_KEYS_VARIABLE})"
    )


def seal(value: str) -> str:
    """`value` encrypted under the configured key; as given when there is no key (or nothing to hide)."""
    key = _key()
    if not key or not value or value.startswith(PREFIX):
        return value
    return PREFIX + _fernet(key).encrypt(value.encode()).decode()


def unseal(value: str, *, host: str) -> str:
    """The clear text of a value `seal` made (values stored unsealed come back unchanged)."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return value
    return _open(value, host=host)[0]


def _reseal(value: str, *, host: str) -> str:
    """`value` sealed under the current key: sealed now if it was stored in clear, sealed again if a
    previous key sealed it, unchanged if the current key did."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return seal(value) if isinstance(value, str) else value
    clear, current = _open(value, host=host)
    return value if current else seal(clear)


def seal_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: seal(v) if k.startswith(SECRET_OPTION_PREFIX) and isinstance(v, str) else v for k, v in options.items()}


def unseal_options(options: dict[str, Any], *, host: str) -> dict[str, Any]:
    return {
        k: unseal(v, host=host) if k.startswith(SECRET_OPTION_PREFIX) and isinstance(v, str) else v
        for k, v in options.items()
    }


def seal_host(host: Host) -> None:
    """Seal `host`'s password and secret options in place (before it is saved)."""
    host.password = seal(host.password)
    host.options = seal_options(dict(host.options or {}))


@dataclass
class Resealed:
    """What `seal_stored_hosts` did: hosts whose stored credentials changed, and hosts it could not
    open (sealed by a key this process was not given; they stay as they are)."""

    changed: int = 0
    unreadable: list[str] = field(default_factory=list)


def seal_stored_hosts(session: Session) -> Resealed:
    """Seal the credentials of hosts stored in clear (before a key was set) and seal again under the
    current key those a previous key sealed (key rotation)."""
    outcome = Resealed()
    if not _key():
        return outcome
    for host in session.exec(select(Host)):
        options = dict(host.options or {})
        try:
            password = _reseal(host.password, host=host.name)
            resealed = {
                k: _reseal(v, host=host.name) if k.startswith(SECRET_OPTION_PREFIX) else v for k, v in options.items()
            }
        except InvalidInput:
            outcome.unreadable.append(host.name)
            continue
        if (password, resealed) != (host.password, options):
            host.password, host.options = password, resealed
            session.add(host)
            outcome.changed += 1
    session.flush()
    return outcome


def ensure_key_file(path: Path) -> str:
    """The key in `path`, made (random, readable by its owner only) if there is none yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use that one
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    key = path.read_text().strip()
    if not key:
        raise InvalidInput(f"{path} is empty: remove it to make a new host secret key, or put the key in it")
    return key
