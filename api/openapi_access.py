"""The OpenAPI document tells how to authenticate, which permission each operation needs, and the
errors it answers (each in the one error shape of `api.errors`)."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from catalog.access import Permission

SECURITY_SCHEMES = {
    "basic": SecurityScheme(type="http", scheme="basic", description="a data user's login and password"),
    "bearer": SecurityScheme(type="http", scheme="bearer", description="an API token from `POST /tokens`"),
}
_CREDENTIALS: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]
_NO_CREDENTIALS = (Permission.PUBLIC, Permission.PROXY)

_MEANING = {
    Permission.PUBLIC: "anyone, without credentials",
    Permission.SIGNED_IN: "any data user (about its own account)",
    Permission.PORTAL: "a data user whose grant at the destination allows the operation",
    Permission.PROXY: "the proxied collection's read policy",
    Permission.READ: "any data user; it sees only what lies within its grants",
    Permission.READ_HOSTS: "operators (the hosts of destinations they operate) and administrators",
    Permission.OPERATE: "operators of the destination (a grant with `operate`) and administrators",
    Permission.CONFIGURE: "administrators",
    Permission.MONITOR: "a monitor session",
}

ERROR = Schema(
    type=OpenAPIType.OBJECT,
    required=["status", "error", "reason", "request_id"],
    properties={
        "status": Schema(type=OpenAPIType.INTEGER),
        "error": Schema(type=OpenAPIType.STRING, description="the kind of error"),
        "reason": Schema(type=OpenAPIType.STRING, description="what was wrong, in words"),
        "request_id": Schema(type=OpenAPIType.STRING, description="the id the API's log has the error under"),
    },
)

_ERRORS = {
    "400": "bad input: the reason says which value and why",
    "401": "credentials missing or wrong",
    "403": "the caller's role or grant does not allow this",
    "404": "no such object, or none within the caller's reach",
    "409": "the object's state does not allow this now",
    "413": "an upload beyond the data user's quota",
    "429": "a quota or connection limit is used up (see Retry-After)",
    "500": "an unexpected error, logged under the request id",
    "503": "a file registered without retrieval is being fetched: retry after Retry-After seconds",
}


def _errors_of(method: str, permission: Permission) -> list[str]:
    codes = ["400", "404", "500"]
    if permission not in _NO_CREDENTIALS:
        codes += ["401", "403"]
    if method != "GET" and method != "HEAD":
        codes.append("409")
    if permission is Permission.PORTAL:
        codes += ["413", "429"]
        if method in ("GET", "HEAD"):
            codes.append("503")
    return codes


def document_access(app: Litestar) -> None:
    """Complete the app's OpenAPI document (once, before it is first served)."""
    openapi = app.openapi_schema
    components = openapi.components if isinstance(openapi.components, Components) else Components()
    components.security_schemes = dict(SECURITY_SCHEMES)
    components.schemas = dict(components.schemas or {}) | {"Error": ERROR}
    openapi.components = components
    paths = openapi.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        item = paths[route.path_format]
        for handler in route.route_handlers:
            permission = handler.opt.get("permission")
            if not isinstance(permission, Permission):
                continue
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if operation is None:
                    continue
                operation.security = [] if permission in _NO_CREDENTIALS else list(_CREDENTIALS)
                needs = f"Permission: `{permission.value}` ({_MEANING[permission]})."
                operation.description = f"{operation.description}\n\n{needs}" if operation.description else needs
                responses = dict(operation.responses or {})
                for code in _errors_of(method, permission):  # replacing Litestar's own shape of a 400
                    responses[code] = OpenAPIResponse(
                        description=_ERRORS[code], content={"application/json": OpenAPIMediaType(schema=ERROR)}
                    )
                operation.responses = responses
