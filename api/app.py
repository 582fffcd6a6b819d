"""The Litestar application: `create_app(settings, *, engine=None, store=None)`."""

from __future__ import annotations

import sqlalchemy as sa
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from api.auth import AuthenticationMiddleware, authorize, is_documentation
from api.errors import EXCEPTION_HANDLERS
from api.home import home, openapi_config, schema_assets
from api.logs import logging_config
from api.metrics import metrics
from api.openapi_access import document_access
from api.routes.acquisition import acquisition_router
from api.routes.config import destinations_router, hosts_router
from api.routes.data_users import data_users_router, policies_router
from api.routes.health import health
from api.routes.monitor import monitor_router
from api.routes.portal import portal_router
from api.routes.products import product_status, products
from api.routes.proxy import ProxyFirst, proxy_routers
from api.routes.s3 import s3_endpoint
from api.routes.stac import stac_router
from api.routes.transfers import transfers_router
from api.routes.users import create_token, me
from catalog.access import Permission
from catalog.database import make_engine, migrate, session_scope
from catalog.events import EventLog
from catalog.portal import Portal, portal_from_settings
from catalog.proxy import delete_stale_copies_on_commit
from catalog.settings import Settings
from catalog.store import DataStore
from catalog.users import ensure_user


def create_app(
    settings: Settings | None = None,
    *,
    engine: sa.Engine | None = None,
    store: DataStore | None = None,
    migrate_database: bool = True,
    portal: Portal | None = None,
) -> Litestar:
    """Build the API. Tests hand in their own engine and store; by default both come from settings."""
    settings = settings or Settings()
    engine = engine or make_engine(settings.resolved_database_url())
    store = store or DataStore.from_settings(settings)
    delete_stale_copies_on_commit(engine, settings.resolved_proxy_cache_dir())

    portal = portal or portal_from_settings(settings, engine, store, EventLog.open(settings.resolved_event_log()))

    def on_startup() -> None:
        if migrate_database:
            migrate(engine)
        with session_scope(engine) as session:
            ensure_user(session, settings.admin_user, settings.admin_password.get_secret_value(), is_admin=True)

    app = Litestar(
        route_handlers=[
            health,
            me,
            create_token,
            destinations_router,
            hosts_router,
            transfers_router,
            portal_router,
            stac_router,
            acquisition_router,
            monitor_router,
            metrics,
            product_status,
            products,
            data_users_router,
            policies_router,
            s3_endpoint,
            *proxy_routers,
            home,
            schema_assets,
        ],
        state=State({"engine": engine, "store": store, "settings": settings, "portal": portal}),
        middleware=[DefineMiddleware(AuthenticationMiddleware)],
        guards=[authorize],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        on_startup=[on_startup],
        openapi_config=openapi_config("0.1.0"),
        logging_config=logging_config(),
    )
    app.on_startup.append(document_access)
    undeclared = routes_without_permission(app)
    if undeclared:  # a route born without a permission is a hole: refuse to start rather than guess
        raise RuntimeError(f"routes declare no permission: {', '.join(undeclared)}")
    return app


def routes_without_permission(app: Litestar) -> list[str]:
    """`METHOD path` of every handler that names no permission (Litestar's own OPTIONS answers and
    the OpenAPI pages aside)."""
    missing: list[str] = []
    for route in app.routes:
        if is_documentation(route.path):
            continue
        handlers = getattr(route, "route_handlers", None) or [getattr(route, "route_handler", None)]
        for handler in handlers:
            methods = getattr(handler, "http_methods", {"ASGI"})
            if methods == {"OPTIONS"} or isinstance(getattr(handler, "opt", {}).get("permission"), Permission):
                continue
            missing.extend(f"{m} {route.path}" for m in sorted(methods))
    return missing


def app_from_env() -> ProxyFirst:
    """Factory for `uvicorn --factory api.app:app_from_env` (what `pds up` runs)."""
    return ProxyFirst(create_app())
