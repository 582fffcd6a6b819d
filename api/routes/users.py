"""The calling user: who am I, and API tokens for scripts and notebooks."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from api.auth import Caller
from catalog.database import session_scope
from catalog.users import issue_token


@get("/me", tags=["users"])
async def me(request: Request[Caller, Any, State]) -> dict[str, Any]:
    return {"login": request.user.login, "is_admin": request.user.is_admin}


@post("/tokens", sync_to_thread=True, tags=["users"], status_code=201)
def create_token(request: Request[Caller, Any, State], state: State) -> dict[str, str]:
    """A new API token for the caller (the previous one stops working); shown once."""
    with session_scope(state.engine) as session:
        token = issue_token(session, request.user.login)
    return {"login": request.user.login, "token": token}
