"""Proxy routes: the asset URLs (`/proxy/...`, authorised by the proxy itself, so public collections
need no credentials) and their administration (registered assets, dataset policies, cache
injection, QoS quotas, groups) for administrators."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from litestar import Litestar, Request, Router, asgi, get, post, put
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.handlers import ASGIRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.types import Receive, Scope, Send
from pydantic import BaseModel, Field
from sqlmodel import select

from api.deps import database, reading
from api.proxy import ProxyService
from catalog import proxy
from catalog.access import Permission
from catalog.errors import InvalidInput, NotFound
from catalog.models import utcnow


def proxy_service(state: State) -> ProxyService:
    """One service per app, made on first use (tests set `state.proxy_clock` before that)."""
    service: ProxyService | None = state.get("proxy")
    if service is None:
        service = ProxyService(state.engine, state.settings, state.get("proxy_clock", time.time))
        state.proxy = service
    return service


@asgi("/proxy", is_mount=True, copy_scope=True, permission=Permission.PROXY)
async def proxy_assets(scope: Scope, receive: Receive, send: Send) -> None:
    """GET/HEAD an asset: `/proxy/{collection}/{item}/{asset}`."""
    service = proxy_service(scope["app"].state)
    # The mount hands over the rest of the path with a trailing slash added; the raw path keeps a
    # directory ("/proxy/c/i/") distinguishable from an asset. Some servers leave the query in it.
    raw = scope.get("raw_path")
    scope["path"] = unquote(raw.split(b"?", 1)[0].decode("latin-1")) if raw else "/proxy" + scope["path"].rstrip("/")
    await service(scope, receive, send)  # type: ignore[arg-type]


class ProxyFirst:
    """The API as `python -m api` serves it: `/proxy/...` goes straight to the proxy service and
    everything else to Litestar, so a range read skips the framework's routing and middleware (the
    proxy authorises by itself)."""

    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"].startswith("/proxy/"):
            await proxy_service(self.app.state)(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self.app(scope, receive, send)


class AssetRegistration(BaseModel):
    collection: str
    item: str
    asset: str
    upstream_href: str = Field(description="http(s)/s3 URL, or a path on upstream_host")
    upstream_host: str | None = Field(default=None, description="a host of the transfer layer")
    media_type: str = "application/octet-stream"
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None


class Injection(BaseModel):
    path: str = Field(description="a file on the API's machine to copy into the cache (harvested data)")


class QuotaBody(BaseModel):
    period_seconds: int = Field(default=3600, gt=0)
    max_requests: int | None = Field(default=None, ge=0)
    max_miss_requests: int | None = Field(default=None, ge=0)
    max_bytes: int | None = Field(default=None, ge=0)
    max_upstream_bytes: int | None = Field(default=None, ge=0)


def asset_url(request: Request[Any, Any, Any], row: proxy.ProxyAsset) -> str:
    settings = request.app.state.settings
    base = settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/proxy/{row.collection}/{row.item}/{row.asset}"


def _view(request: Request[Any, Any, Any], row: proxy.ProxyAsset) -> dict[str, Any]:
    return row.model_dump(mode="json") | {"href": asset_url(request, row)}


@post("/", status_code=201, permission=Permission.CONFIGURE, sync_to_thread=True)
def register(request: Request[Any, Any, Any], state: State, data: JSONBody[AssetRegistration]) -> dict[str, Any]:
    """Register (or update) a proxied asset; answers its proxy URL in `href`."""
    with database(state) as session:
        fields = data.model_dump()
        row = proxy.register_asset(
            session,
            fields.pop("collection"),
            fields.pop("item"),
            fields.pop("asset"),
            fields.pop("upstream_href"),
            **fields,
        )
        view = _view(request, row)
    return view  # a changed upstream's cached copy went with the commit (`proxy.delete_stale_copies_on_commit`)


@get("/", permission=Permission.CONFIGURE, sync_to_thread=True)
def list_assets(
    request: Request[Any, Any, Any], state: State, collection: FromQuery[str | None] = None
) -> list[dict[str, Any]]:
    with reading(state) as session:
        query = select(proxy.ProxyAsset)
        if collection:
            query = query.where(proxy.ProxyAsset.collection == collection)
        return [_view(request, row) for row in session.exec(query.limit(1000))]


@post(
    "/{collection:str}/{item:str}/{asset:str}/cache",
    status_code=201,
    permission=Permission.CONFIGURE,
    sync_to_thread=True,
)
def inject(
    request: Request[Any, Any, Any],
    state: State,
    collection: FromPath[str],
    item: FromPath[str],
    asset: FromPath[str],
    data: JSONBody[Injection],
) -> dict[str, Any]:
    """Put a harvested file into the cache directly."""
    source = Path(data.path)
    if not source.is_file():
        raise InvalidInput(f"{data.path} is no file on the API's machine")
    with database(state) as session:
        row = proxy.inject(
            session, state.settings.resolved_proxy_cache_dir(), collection, item, asset, source, now=utcnow()
        )
        return _view(request, row)


assets_router = Router("/proxied-assets", route_handlers=[register, list_assets, inject], tags=["proxy"])


@put("/{collection:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def set_policy(state: State, collection: FromPath[str], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    """Set a dataset's policy: mode, sync_wait_seconds, retention (+ retention_days / max_bytes), public,
    readers, presign_seconds."""
    with database(state) as session:
        policy = proxy.set_policy(session, collection, **data)
        answer = policy.model_dump(mode="json")
    proxy_service(state).forget_settings()
    return answer


@get("/{collection:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def get_policy(state: State, collection: FromPath[str]) -> dict[str, Any]:
    with reading(state) as session:
        policy = proxy.dataset_policy(session, collection)
        if policy is None:
            raise NotFound(f"no proxied collection {collection!r}")
        return policy.model_dump(mode="json")


policies_router = Router("/proxied-collections", route_handlers=[set_policy, get_policy], tags=["proxy"])


@put("/{subject:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def set_quota(state: State, subject: FromPath[str], data: JSONBody[QuotaBody]) -> dict[str, Any]:
    """QoS limits of `user:LOGIN` or `group:NAME` per period (unset: unlimited)."""
    with database(state) as session:
        answer = proxy.set_quota(session, subject, **data.model_dump()).model_dump(mode="json")
    proxy_service(state).forget_settings()
    return answer


@post("/{group:str}/members/{login:str}", status_code=201, permission=Permission.CONFIGURE, sync_to_thread=True)
def add_member(state: State, group: FromPath[str], login: FromPath[str]) -> dict[str, str]:
    with database(state) as session:
        proxy.add_group_member(session, group, login)
    proxy_service(state).forget_settings()
    return {"group": group, "login": login}


quotas_router = Router("/qos-quotas", route_handlers=[set_quota], tags=["proxy"])
groups_router = Router("/qos-groups", route_handlers=[add_member], tags=["proxy"])
proxy_routers: list[Router | ASGIRouteHandler] = [
    proxy_assets,
    assets_router,
    policies_router,
    quotas_router,
    groups_router,
]
