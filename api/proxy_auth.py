"""Who reads through the proxy: OIDC bearer tokens (JWT checked against the issuer's JWKS) and the
project's own data users (HTTP Basic or a pds API token).

Everything here runs before any upstream work. A verified credential is remembered for a few minutes
(keyed by a hash of the header), so reading ranges costs no database round trip; JWTs are re-checked
for expiry against the injected clock on every request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import sqlalchemy as sa

from api.auth import _CACHE_SECONDS, _check
from api.recent import Recent
from catalog.database import read_scope
from catalog.proxy import groups_of
from catalog.settings import Settings


class Unauthorized(Exception):
    """Credentials were given but are not valid (401)."""


@dataclass(frozen=True)
class Reader:
    login: str
    groups: tuple[str, ...] = ()
    is_admin: bool = False
    expires_at: float | None = field(default=None, compare=False)

    @property
    def subjects(self) -> list[str]:
        """The QoS subjects this reader counts against."""
        return [f"user:{self.login}", *(f"group:{g}" for g in self.groups)]


class OidcVerifier:
    """Validates bearer JWTs of one issuer; its signing keys come from the JWKS its discovery names."""

    def __init__(self, issuer: str, audience: str, groups_claim: str, clock: Callable[[], float]) -> None:
        self.issuer, self.audience, self.groups_claim, self.clock = issuer.rstrip("/"), audience, groups_claim, clock
        self._jwks: jwt.PyJWKClient | None = None

    def _keys(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            discovery = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
            discovery.raise_for_status()
            self._jwks = jwt.PyJWKClient(discovery.json()["jwks_uri"], cache_keys=True, lifespan=600)
        return self._jwks

    def verify(self, token: str) -> Reader:
        try:
            key = self._keys().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                issuer=self.issuer,
                audience=self.audience or None,
                # Expiry is checked below against the injected clock (tests move time).
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": bool(self.audience),
                },
            )
        except (jwt.PyJWTError, httpx.HTTPError, KeyError, ValueError) as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        now = self.clock()
        if "exp" in claims and now >= float(claims["exp"]):
            raise Unauthorized("bearer token expired")
        if "nbf" in claims and now < float(claims["nbf"]):
            raise Unauthorized("bearer token not valid yet")
        login = str(claims.get("preferred_username") or claims.get("sub") or "")
        if not login:
            raise Unauthorized("bearer token names no subject")
        groups = claims.get(self.groups_claim) or []
        return Reader(login, tuple(str(g) for g in groups), expires_at=claims.get("exp"))


class ProxyAuthenticator:
    def __init__(self, engine: sa.Engine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.clock = engine, clock
        self.oidc = (
            OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_groups_claim, clock)
            if settings.oidc_issuer
            else None
        )
        self._readers: Recent[str, Reader] = Recent(_CACHE_SECONDS)
        self._seen_now: dict[str, tuple[float, Reader]] = {}

    async def identify(self, header: str) -> Reader | None:
        """The reader behind an Authorization header; None without one; Unauthorized when invalid."""
        if not header:
            return None
        key = hashlib.sha256(header.encode()).hexdigest()
        reader = await self._readers.get(key, lambda: self._verify(header))
        if reader.expires_at is not None and self.clock() >= reader.expires_at:
            raise Unauthorized("bearer token expired")
        return reader

    def identify_now(self, header: str) -> Reader | None:
        """`identify` for code already off the event loop (the STAC API's handlers run in threads);
        a verified credential is remembered as `identify` remembers it (password checks are slow)."""
        if not header:
            return None
        key = hashlib.sha256(header.encode()).hexdigest()
        seen = self._seen_now.get(key)
        if seen is not None and time.monotonic() - seen[0] < _CACHE_SECONDS:
            reader = seen[1]
        else:
            reader = self._verify(header)
            if len(self._seen_now) > 10_000:
                self._seen_now.clear()
            self._seen_now[key] = (time.monotonic(), reader)
        if reader.expires_at is not None and self.clock() >= reader.expires_at:
            raise Unauthorized("bearer token expired")
        return reader

    def forget(self) -> None:
        """Verify every credential again (groups changed)."""
        self._readers.forget()
        self._seen_now.clear()

    def _verify(self, header: str) -> Reader:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.count(".") == 2 and self.oidc is not None:
            return self.oidc.verify(value.strip())
        return self._project_user(header)

    def _project_user(self, header: str) -> Reader:
        caller = _check(self.engine, header)
        if caller is None:
            raise Unauthorized("unknown user, wrong password or invalid token")
        with read_scope(self.engine) as session:
            groups = groups_of(session, caller.login)
        return Reader(caller.login, tuple(groups), caller.is_admin)


def may_read(reader: Reader, readers: list[str]) -> bool:
    """Empty `readers`: every authenticated user; else logins and `group:NAME` entries."""
    if not readers or reader.is_admin:
        return True
    allowed = set(readers)
    return reader.login in allowed or any(f"group:{g}" in allowed for g in reader.groups)
