"""The monitor's log-in sessions and form tokens, signed with the API's session key.

A session is a cookie `login|expiry|nonce|signature` (HMAC-SHA256). The cookie is HttpOnly and
SameSite=Strict, and every form carries a token derived from the session's nonce, so a page on
another site can neither read the session nor post a form with it (the log-in form's token is bound
to a nonce cookie set by the log-in page). The user is looked up again on each request, so a
deactivated user or a withdrawn administrator right takes effect at once.

The key is `PDS_SESSION_SECRET` when set; otherwise the one kept in the database (made by the first
API process that needs it), so a session issued by one replica is good at every other, and across
restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.settings import Settings
from catalog.shared_state import shared_key

if TYPE_CHECKING:
    import sqlalchemy as sa

SESSION_COOKIE = "pds_session"
LOGIN_COOKIE = "pds_login"


@dataclass(frozen=True)
class Session:
    login: str
    nonce: str


class SessionSigner:
    def __init__(self, settings: Settings, engine: sa.Engine | None = None) -> None:
        key = settings.session_secret.get_secret_value()
        if key:
            self._key = key.encode()
        else:
            self._key = shared_key(engine, "session") if engine is not None else secrets.token_bytes(32)
        self.lifetime = settings.session_hours * 3600

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def issue(self, login: str) -> str:
        payload = f"{login}|{int(time.time() + self.lifetime)}|{secrets.token_hex(16)}"
        return f"{payload}|{self._sign(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None when it is missing, forged or expired."""
        if not cookie or cookie.count("|") != 3:
            return None
        payload, _, signature = cookie.rpartition("|")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        login, expiry, nonce = payload.split("|")
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        return Session(login, nonce)

    def form_token(self, nonce: str) -> str:
        """The token a form must send back: bound to the session (or the log-in page's nonce)."""
        return self._sign(f"form|{nonce}")

    def check_form_token(self, nonce: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.form_token(nonce), token or "")
