"""Host credentials sealed at rest: a host's password and its `secret_*` options are kept encrypted
in the database when `PDS_HOST_SECRET_KEY` is set, and opened only where a connection is made.

Sealed values are Fernet tokens (AES-128-CBC + HMAC-SHA256) behind a `sealed:v1:` prefix, under a
key derived from `PDS_HOST_SECRET_KEY`. A copy of the database alone then gives no credential
away. Every process that connects to hosts (the API, movers, retrievers, continental movers) needs
the same key; `pds up` makes one at `<data_dir>/host-secret.key` on first start and hands it to its
processes. Without a key, values are stored as given (as before sealing existed), and values stored
before a key was set stay readable until `pds migrate` (or `pds up`) seals them.

The key comes from the environment directly, not through `Settings`, because blocks open secrets
for every connection and must not parse the whole configuration each time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
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


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"pds-host-secrets:" + key.encode()).digest()))


def _key() -> str:
    return os.environ.get(KEY_VARIABLE, "")


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
    key = _key()
    if not key:
        raise InvalidInput(f"host {host}'s credentials are sealed: set {KEY_VARIABLE} to the key that sealed them")
    try:
        return _fernet(key).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise InvalidInput(
            f"host {host}'s credentials were sealed with another {KEY_VARIABLE} than this process has"
        ) from None


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


def seal_stored_hosts(session: Session) -> int:
    """Seal the credentials of hosts stored before a key was set; how many hosts changed."""
    if not _key():
        return 0
    changed = 0
    for host in session.exec(select(Host)):
        before = (host.password, dict(host.options or {}))
        seal_host(host)
        if (host.password, host.options) != before:
            session.add(host)
            changed += 1
    session.flush()
    return changed


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
