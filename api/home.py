"""The landing page at `/` and an API page at `/schema` that works without the internet.

Litestar's documentation pages load their scripts, styles and icons from public CDNs, so on a machine
without internet access (common next to data) `/schema` was blank. Here it is Swagger UI served from
the pinned `swagger-ui-bundle-v2` package (Swagger UI 5, which reads the OpenAPI 3.1 Litestar writes),
under `/schema-assets/`. No credentials are needed for either page: they show nothing the API's own
schema does not, and the links lead to pages that ask for them.
"""

from __future__ import annotations

from html import escape

from litestar import get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from catalog.access import Permission

ASSETS = "/schema-assets"


def openapi_config(version: str) -> OpenAPIConfig:
    """The API's OpenAPI document, rendered at /schema by Swagger UI from assets pds serves itself."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
        path="/swagger",
    )
    return OpenAPIConfig(title="pds", version=version, description="Product Data Store API", render_plugins=[swagger])


schema_assets = create_static_files_router(
    path=ASSETS,
    directories=[swagger_ui_path],
    name="schema-assets",
    include_in_schema=False,
    opt={"exclude_from_auth": True, "permission": Permission.PUBLIC},
    cache_control=None,
)

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>pds</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; color: #222 }}
a {{ color: #0b5cad }} li {{ margin: .4rem 0 }} small {{ color: #666 }}
</style></head>
<body>
<h1>pds</h1>
<p>A Product Data Store: acquisition, dissemination, a Data Portal and a federated data proxy.</p>
<ul>
<li><a href="/monitor">Monitor</a> <small>destinations, queues and transfers</small></li>
<li><a href="/schema">API documentation</a> <small>every operation, tried from the page</small></li>
<li><a href="/stac/">STAC API</a> <small>the inventory: collections, items, search</small></li>
<li><a href="{prefect}">Prefect UI</a> <small>flow runs, retries, deployments</small></li>
<li><a href="/metrics">Metrics</a> <small>Prometheus</small> · <a href="/health">health</a></li>
</ul>
</body>
</html>
"""


@get(
    "/",
    media_type=MediaType.HTML,
    include_in_schema=False,
    exclude_from_auth=True,
    sync_to_thread=False,
    permission=Permission.PUBLIC,
)
def home(state: State) -> str:
    """Where a browser pointed at the API's address lands: links to everything a person uses."""
    return _PAGE.format(prefect=escape(state.settings.resolved_prefect_ui_url(), quote=True))
