"""The JSON documents of the STAC API: landing page, conformance, collections, items, queryables.

Every link is absolute, under `base` (the public URL of the API's `/stac`); the API routes only fill
these documents in and send them.
"""

from __future__ import annotations

from typing import Any

import pystac

from catalog.inventory import StacCollection, StacItem
from catalog.stac_search import MAX_LIMIT, SORTABLE, Fields

STAC_VERSION = pystac.get_stac_version()
GEOJSON = "application/geo+json"
JSON = "application/json"
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "https://api.stacspec.org/v1.0.0/ogcapi-features/extensions/transaction",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/simpletx",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-operators",
]


def _link(rel: str, href: str, media_type: str = JSON, **extra: Any) -> dict[str, Any]:
    return {"rel": rel, "href": href, "type": media_type} | extra


def landing_page(base: str, title: str = "pds STAC inventory") -> dict[str, Any]:
    return {
        "type": "Catalog",
        "id": "pds",
        "title": title,
        "description": "Data files of pds published as STAC Items, one collection per dataset",
        "stac_version": STAC_VERSION,
        "conformsTo": CONFORMANCE,
        "links": [
            _link("self", f"{base}/"),
            _link("root", f"{base}/"),
            _link("conformance", f"{base}/conformance"),
            _link("data", f"{base}/collections"),
            _link("search", f"{base}/search", GEOJSON, method="GET"),
            _link("search", f"{base}/search", GEOJSON, method="POST"),
            _link(QUERYABLES_REL, f"{base}/queryables", "application/schema+json"),
            _link(
                "service-desc",
                f"{base.rsplit('/stac', 1)[0]}/schema/openapi.json",
                "application/vnd.oai.openapi+json;version=3.0",
            ),
        ],
    }


#: The STAC Authentication extension: how to authenticate to read a protected collection's assets.
AUTHENTICATION = "https://stac-extensions.github.io/authentication/v1.1.0/schema.json"


def auth_schemes(oidc_issuer: str = "") -> dict[str, dict[str, str]]:
    """What the proxy accepts from a reader, as `auth:schemes`: a pds user's password (Basic), a pds
    API token (Bearer), and an OIDC issuer's access tokens when one is configured."""
    schemes = {
        "basic": {"type": "http", "scheme": "basic", "description": "a pds data user's login and password"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "a pds API token"},
    }
    if oidc_issuer:
        schemes["oidc"] = {
            "type": "openIdConnect",
            "openIdConnectUrl": f"{oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
            "description": "an access token of this issuer, as a Bearer token",
        }
    return schemes


def _protected(document: dict[str, Any], schemes: dict[str, dict[str, str]], *, in_properties: bool) -> None:
    """Say, with the Authentication extension, that the assets served by the proxy need credentials."""
    declared = document.setdefault("stac_extensions", [])
    if AUTHENTICATION not in declared:
        declared.append(AUTHENTICATION)
    (document["properties"] if in_properties else document)["auth:schemes"] = schemes
    refs = sorted(schemes)
    if document.get("assets"):  # a new mapping: the stored one is never changed
        document["assets"] = {
            name: asset | {"auth:refs": refs}
            if isinstance(asset, dict) and "/proxy/" in str(asset.get("href", ""))
            else asset
            for name, asset in document["assets"].items()
        }


def unprotected(item: dict[str, Any], schemes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """An item sent back as a protected view showed it, without what that view added (`_protected`):
    the schemes in its properties, each proxied asset's `auth:refs` and the extension's schema, when
    they are exactly what pds would add; anything else the writer wrote about authentication stays."""
    properties = dict(item.get("properties") or {})
    if properties.get("auth:schemes") == schemes:
        del properties["auth:schemes"]
    refs = sorted(schemes)
    assets = {
        name: {k: v for k, v in asset.items() if k != "auth:refs"}
        if isinstance(asset, dict) and "/proxy/" in str(asset.get("href", "")) and asset.get("auth:refs") == refs
        else asset
        for name, asset in (item.get("assets") or {}).items()
    }
    result = item | {"properties": properties, "assets": assets}
    still_used = "auth:schemes" in properties or any(
        isinstance(a, dict) and any(str(k).startswith("auth:") for k in a) for a in assets.values()
    )
    if not still_used and AUTHENTICATION in (item.get("stac_extensions") or []):
        result["stac_extensions"] = [url for url in item["stac_extensions"] if url != AUTHENTICATION]
    return result


def collection_document(
    collection: StacCollection, base: str, auth: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """The collection as the API shows it; with `auth` (its assets need credentials), declared so."""
    href = f"{base}/collections/{collection.id}"
    document = dict(collection.body) | {
        "id": collection.id,
        "links": [
            _link("self", href),
            _link("root", f"{base}/"),
            _link("parent", f"{base}/"),
            _link("items", f"{href}/items", GEOJSON),
            _link(QUERYABLES_REL, f"{href}/queryables", "application/schema+json"),
        ],
    }
    if auth:
        document["stac_extensions"] = list(document.get("stac_extensions") or [])
        _protected(document, auth, in_properties=False)
    return document


def item_document(item: StacItem, base: str, auth: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The item as the API shows it; with `auth` (its assets need credentials), declared so."""
    collection = f"{base}/collections/{item.collection_id}"
    document: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(item.stac_extensions),
        "id": item.id,
        "collection": item.collection_id,
        "geometry": item.geometry,
    }
    if item.minx is not None:
        document["bbox"] = [item.minx, item.miny, item.maxx, item.maxy]
    document["properties"] = dict(item.properties)
    document["assets"] = dict(item.assets)
    document["links"] = [
        _link("self", f"{collection}/items/{item.id}", GEOJSON),
        _link("parent", collection),
        _link("collection", collection),
        _link("root", f"{base}/"),
        *item.links,
    ]
    if auth:
        _protected(document, auth, in_properties=True)
    return document


def item_collection(features: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, "links": links, "numberReturned": len(features)}


def queryables(url: str) -> dict[str, Any]:
    """What a filter may name: the columns, geometry, and (as the schema allows) any other property."""
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": url,
        "type": "object",
        "title": "Queryables of the pds STAC inventory",
        "properties": {
            "id": {"description": "Item id", "type": "string"},
            "collection": {"description": "Collection id", "type": "string"},
            "geometry": {"description": "Footprint (S_INTERSECTS)", "$ref": "https://geojson.org/schema/Geometry.json"},
            "datetime": {"description": "Acquisition time", "type": "string", "format": "date-time"},
            "start_datetime": {"type": "string", "format": "date-time"},
            "end_datetime": {"type": "string", "format": "date-time"},
            "eo:cloud_cover": {"type": "number", "minimum": 0, "maximum": 100},
            "order:status": {"type": "string", "enum": ["orderable", "succeeded"]},
        },
        "additionalProperties": True,
        "x-pds-sortable": list(SORTABLE),
        "x-pds-max-limit": MAX_LIMIT,
    }


IDENTITY = ["type", "stac_version", "id", "collection"]
"""Always returned, whatever the fields say: what the item is and where it belongs."""
DEFAULT_FIELDS = [
    "type",
    "stac_version",
    "id",
    "geometry",
    "bbox",
    "links",
    "assets",
    "properties.datetime",
    "collection",
]


def _select(
    document: dict[str, Any], prefix: tuple[str, ...], rules: dict[tuple[str, ...], bool], keep: bool
) -> dict[str, Any]:
    """Keep each key by the most specific rule naming it or a parent of it; `keep` when none does."""
    result: dict[str, Any] = {}
    for key, value in document.items():
        path = prefix + (key,)
        decided = next((rules[path[:n]] for n in range(len(path), 0, -1) if path[:n] in rules), keep)
        deeper = any(len(rule) > len(path) and rule[: len(path)] == path for rule in rules)
        if deeper and isinstance(value, dict):
            inner = _select(value, path, rules, keep)
            if inner or decided:
                result[key] = inner
        elif decided:
            result[key] = value
    return result


def apply_fields(document: dict[str, Any], fields: Fields | None) -> dict[str, Any]:
    """The fields extension. Without `include` (a GET of exclusions only, or a POST without the key):
    the whole item minus the excluded paths. With an empty one: the default fields minus the excluded.
    Otherwise the included paths (and the item's identity) minus the excluded; an explicit include
    beats an explicit exclude of the same path."""
    if fields is None:
        return document
    rules: dict[tuple[str, ...], bool] = {}
    if fields.include is not None:
        rules |= {tuple(path.split(".")): True for path in (IDENTITY if fields.include else DEFAULT_FIELDS)}
    rules |= {tuple(path.split(".")): False for path in fields.exclude}
    rules |= {tuple(path.split(".")): True for path in fields.include or []}
    rules |= {(path,): True for path in IDENTITY}
    return _select(document, (), rules, keep=fields.include is None)
