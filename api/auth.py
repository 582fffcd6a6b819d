"""Who is calling: HTTP Basic (login + password) or a Bearer API token, checked on every route.

Password hashes are deliberately slow (scrypt), so a verified credential is remembered for a few
minutes (keyed by a hash, never the password itself) and verification runs off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass

import anyio.to_thread
import sqlalchemy as sa
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from catalog.access import Access, Permission, Role, access_of
from catalog.database import read_scope
from catalog.users import authenticate_password, authenticate_token

PUBLIC_PATHS = {"/health", "/schema", "/metrics"}
DOCUMENTATION = "/schema"
#: Paths that do their own authentication or need none: the monitor pages use a session cookie;
#: /s3 authenticates each request itself (AWS Signature Version 4, api/s3_sigv4.py); proxy assets
#: authorise themselves (public collections need no credentials, OIDC tokens are accepted).
EXCLUDED = ["^/health$", "^/schema", "^/metrics$", "^/monitor(/|$)", "^/s3(/|$)", "^/proxy/"]
_CACHE_SECONDS = 300.0
CHALLENGE = {"WWW-Authenticate": 'Basic realm="pds", Bearer'}


@dataclass(frozen=True)
class Caller:
    login: str
    is_admin: bool


class CredentialCache:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Caller]] = {}

    def get(self, key: str) -> Caller | None:
        hit = self._seen.get(key)
        if hit and time.monotonic() - hit[0] < _CACHE_SECONDS:
            return hit[1]
        self._seen.pop(key, None)
        return None

    def put(self, key: str, caller: Caller) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (time.monotonic(), caller)


def _check(engine: sa.Engine, header: str) -> Caller | None:
    scheme, _, value = header.partition(" ")
    with read_scope(engine) as session:
        if scheme.lower() == "bearer" and value:
            user = authenticate_token(session, value.strip())
        elif scheme.lower() == "basic" and value:
            try:
                login, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return None
            user = authenticate_password(session, login, password)
        else:
            return None
        return Caller(user.login, user.is_admin) if user else None


class AuthenticationMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: ASGIApp, **kwargs: object) -> None:
        super().__init__(app, exclude=EXCLUDED, **kwargs)  # type: ignore[arg-type]
        self.cache = CredentialCache()

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        if not header:
            raise NotAuthorizedException("credentials required: HTTP Basic or a Bearer token", headers=CHALLENGE)
        key = hashlib.sha256(header.encode()).hexdigest()
        caller = self.cache.get(key)
        if caller is None:
            engine: sa.Engine = connection.app.state.engine
            caller = await anyio.to_thread.run_sync(_check, engine, header)
            if caller is None:
                raise NotAuthorizedException("unknown user, wrong password or invalid token", headers=CHALLENGE)
            self.cache.put(key, caller)
        return AuthenticationResult(user=caller, auth=None)


def _load_access(engine: sa.Engine, login: str) -> Access:
    with read_scope(engine) as session:
        return access_of(session, login)


#: Routes that authorise each request themselves, after the authentication they need: the portal
#: (the data user's grant of each operation; /s3 checks its SigV4 signature first), the proxy (each
#: collection's read policy), the monitor (its session cookie, a log-in page rather than a 401).
_SELF_AUTHORISED = frozenset({Permission.PUBLIC, Permission.PORTAL, Permission.PROXY, Permission.MONITOR})


async def authorize(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """The one guard of the API: the route's declared permission against the caller's role.

    Runs before the handler, so nothing is read or written for a caller whose role is not enough.
    The caller's `Access` (its grants as they are now) is kept on the request for the handler's
    object-level checks (`request_access`). A route without a declared permission is refused.
    """
    if connection.scope.get("method") == "OPTIONS":  # answers only which methods exist, to anyone
        return
    permission = handler.opt.get("permission")
    if permission is None and is_documentation(connection.scope["path"]):
        return  # the OpenAPI document and its pages, which Litestar's own handlers serve
    if not isinstance(permission, Permission):
        raise PermissionDeniedException("this route declares no permission")
    if permission in _SELF_AUTHORISED:
        return
    caller = connection.scope.get("user")
    if not isinstance(caller, Caller):
        raise NotAuthorizedException("credentials required: HTTP Basic or a Bearer token", headers=CHALLENGE)
    access = await anyio.to_thread.run_sync(_load_access, connection.app.state.engine, caller.login)
    if access.role is Role.ANONYMOUS:
        raise NotAuthorizedException(f"data user {caller.login} is unknown or disabled", headers=CHALLENGE)
    if not access.allows(permission):
        raise PermissionDeniedException(str(access.refuse(permission)))
    connection.state.access = access


def is_documentation(path: str) -> bool:
    """Whether `path` is one of the OpenAPI pages Litestar serves itself (under /schema)."""
    return path == DOCUMENTATION or path.startswith(DOCUMENTATION + "/")


def request_access(request: ASGIConnection) -> Access:  # type: ignore[type-arg]
    """The caller's access, as `authorize` found it for this request."""
    access = getattr(request.state, "access", None)
    if not isinstance(access, Access):
        raise PermissionDeniedException("no access was established for this request")
    return access
