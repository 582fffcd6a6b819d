"""The calling user: who am I, and API tokens for scripts and notebooks."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from api.auth import Caller, request_access
from catalog.access import Permission
from catalog.database import session_scope
from catalog.users import issue_token


@get("/me", tags=["users"], permission=Permission.SIGNED_IN)
async def me(request: Request[Caller, Any, State]) -> dict[str, Any]:
    """Who the caller is, its role and what it reaches (administrators reach every destination)."""
    access = request_access(request)
    return {
        "login": request.user.login,
        "is_admin": access.is_admin,
        "role": access.role.value,
        "destinations": None if access.is_admin else sorted(access.granted),
        "operates": None if access.is_admin else sorted(access.operated),
    }


@post("/tokens", sync_to_thread=True, tags=["users"], status_code=201, permission=Permission.SIGNED_IN)
def create_token(request: Request[Caller, Any, State], state: State) -> dict[str, str]:
    """A new API token for the caller (the previous one stops working); shown once."""
    with session_scope(state.engine) as session:
        token = issue_token(session, request.user.login)
    return {"login": request.user.login, "token": token}
