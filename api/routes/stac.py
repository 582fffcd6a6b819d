"""The STAC API v1.0.0 under `/stac`: core, collections, features, item search, filter, sort, fields and
transactions, plus publishing destinations into the inventory.

Reading (landing page, collections, items, search, queryables) needs no credentials, like a public
catalogue; transactions and publishing need an administrator. Errors are the API's JSON errors:
bad parameters 400 with the reason, unknown collection or item 404, duplicates 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from api.auth import CHALLENGE, request_access
from api.deps import database, reading
from api.proxy_auth import Unauthorized, may_read
from api.routes.proxy import proxy_service
from catalog import inventory, stac, stac_documents, stac_transactions
from catalog.access import Permission
from catalog.errors import InvalidInput, NotFound
from catalog.proxy import ProxyDataset
from catalog.stac_search import SearchRequest, search, unknown_collections

GEOJSON = stac_documents.GEOJSON


def _base(request: Request[Any, Any, Any], state: State) -> str:
    public = state.settings.public_url
    return (public.rstrip("/") if public else str(request.base_url).rstrip("/")) + "/stac"


def _json(content: Any, media_type: str = "application/json", status_code: int = 200) -> Response[Any]:
    return Response(content, media_type=media_type, status_code=status_code)


# --- Core and collections -----------------------------------------------------------------------


@get(["/", ""], sync_to_thread=False, exclude_from_auth=True, permission=Permission.PUBLIC)
def landing_page(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return _json(stac_documents.landing_page(_base(request, state)))


@get("/conformance", sync_to_thread=False, exclude_from_auth=True, permission=Permission.PUBLIC)
def conformance() -> Response[Any]:
    return _json({"conformsTo": stac_documents.CONFORMANCE})


@get("/queryables", sync_to_thread=False, exclude_from_auth=True, permission=Permission.PUBLIC)
def queryables(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    return _json(stac_documents.queryables(f"{_base(request, state)}/queryables"), "application/schema+json")


@get("/collections", sync_to_thread=True, exclude_from_auth=True, permission=Permission.PUBLIC)
def list_collections(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    base = _base(request, state)
    seen = _visibility(request, state)
    with reading(state) as session:
        rows = session.exec(select(inventory.StacCollection).order_by(inventory.StacCollection.id)).all()
        collections = [
            stac_documents.collection_document(c, base, seen.auth_of(c.id)) for c in rows if c.id not in seen.hidden
        ]
    links = [
        {"rel": "self", "href": f"{base}/collections", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        {"rel": "parent", "href": f"{base}/", "type": "application/json"},
    ]
    return _json({"collections": collections, "links": links})


@get("/collections/{collection_id:str}", sync_to_thread=True, exclude_from_auth=True, permission=Permission.PUBLIC)
def read_collection(collection_id: FromPath[str], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    seen = _visibility(request, state)
    _require_visible(collection_id, seen.hidden)
    with reading(state) as session:
        collection = inventory.get_collection(session, collection_id)
        return _json(stac_documents.collection_document(collection, _base(request, state), seen.auth_of(collection_id)))


@get(
    "/collections/{collection_id:str}/queryables",
    sync_to_thread=True,
    exclude_from_auth=True,
    permission=Permission.PUBLIC,
)
def collection_queryables(collection_id: FromPath[str], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    _require_visible(collection_id, _visibility(request, state).hidden)
    with reading(state) as session:
        inventory.get_collection(session, collection_id)
    url = f"{_base(request, state)}/collections/{collection_id}/queryables"
    return _json(stac_documents.queryables(url), "application/schema+json")


# --- Who may see what ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Visibility:
    """What the caller may see of the inventory: `hidden` collections are not listed, searched or shown
    to it, so the inventory never advertises an asset whose URL would answer 401 or 403 to the same
    caller; the other `protected` ones are shown with the schemes their assets need (`auth`)."""

    hidden: frozenset[str]
    protected: frozenset[str]
    auth: dict[str, dict[str, str]]

    def auth_of(self, collection_id: str) -> dict[str, dict[str, str]] | None:
        return self.auth if collection_id in self.protected else None


def _visibility(request: Request[Any, Any, Any], state: State) -> Visibility:
    """Collections under a private dataset policy: hidden from callers it does not admit, protected
    for the others."""
    with reading(state) as session:
        private = session.exec(select(ProxyDataset).where(col(ProxyDataset.public).is_(False))).all()
        session.expunge_all()
    schemes = stac_documents.auth_schemes(state.settings.oidc_issuer)
    if not private:
        return Visibility(frozenset(), frozenset(), schemes)
    try:
        reader = proxy_service(state).auth.identify_now(request.headers.get("authorization", ""))
    except Unauthorized as exc:
        raise NotAuthorizedException(str(exc), headers=CHALLENGE) from None
    hidden = frozenset(p.collection for p in private if reader is None or not may_read(reader, p.readers))
    return Visibility(hidden, frozenset(p.collection for p in private), schemes)


def _require_visible(collection_id: str, hidden: frozenset[str]) -> None:
    if collection_id in hidden:
        raise NotFound(f"no collection {collection_id!r}")


# --- Items and search ---------------------------------------------------------------------------


def _page(
    session: Session,
    params: dict[str, Any],
    *,
    get: bool,
    base: str,
    self_href: str,
    method: str,
    implied: dict[str, Any] | None = None,
    seen: Visibility,
) -> dict[str, Any]:
    """One page; `implied` parameters (a collection's items) are searched on but not put in next links;
    nothing of `hidden` collections is searched."""
    query = SearchRequest.parse(params | (implied or {}), get=get)
    missing = unknown_collections(session, query.collections) + [c for c in query.collections if c in seen.hidden]
    if missing:
        raise NotFound(f"no collection {', '.join(map(repr, missing))}")
    rows, token = search(session, query, hidden=seen.hidden)
    features = [
        stac_documents.apply_fields(stac_documents.item_document(r, base, seen.auth_of(r.collection_id)), query.fields)
        for r in rows
    ]
    links: list[dict[str, Any]] = [{"rel": "root", "href": f"{base}/", "type": "application/json"}]
    if token is not None:
        if method == "GET":
            kept = {k: v for k, v in params.items() if k != "token"}
            href = f"{self_href}?{urlencode(kept | {'token': token})}"
            links.append({"rel": "next", "href": href, "type": GEOJSON, "method": "GET"})
        else:
            body = {k: v for k, v in params.items() if k != "token"} | {"token": token}
            links.append(
                {"rel": "next", "href": self_href, "type": GEOJSON, "method": "POST", "body": body, "merge": False}
            )
    return stac_documents.item_collection(features, links)


def _query_params(request: Request[Any, Any, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in request.query_params.items():
        if key in params:
            raise InvalidInput(f"query parameter {key!r} given twice; use commas for lists")
        params[key] = value
    return params


@get("/search", sync_to_thread=True, exclude_from_auth=True, permission=Permission.PUBLIC)
def search_get(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    base = _base(request, state)
    seen = _visibility(request, state)
    with reading(state) as session:
        page = _page(
            session,
            _query_params(request),
            get=True,
            base=base,
            self_href=f"{base}/search",
            method="GET",
            seen=seen,
        )
    return _json(page, GEOJSON)


@post("/search", sync_to_thread=True, status_code=200, exclude_from_auth=True, permission=Permission.PUBLIC)
def search_post(data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    base = _base(request, state)
    seen = _visibility(request, state)
    with reading(state) as session:
        page = _page(session, data, get=False, base=base, self_href=f"{base}/search", method="POST", seen=seen)
    return _json(page, GEOJSON)


@get(
    "/collections/{collection_id:str}/items", sync_to_thread=True, exclude_from_auth=True, permission=Permission.PUBLIC
)
def list_items(collection_id: FromPath[str], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    base = _base(request, state)
    params = _query_params(request)
    if "collections" in params or "ids" in params or "intersects" in params:
        raise InvalidInput("collections, ids and intersects are parameters of /search, not of a collection's items")
    seen = _visibility(request, state)
    with reading(state) as session:
        _require_visible(collection_id, seen.hidden)
        inventory.get_collection(session, collection_id)
        page = _page(
            session,
            params,
            get=True,
            base=base,
            self_href=f"{base}/collections/{collection_id}/items",
            method="GET",
            implied={"collections": collection_id},
            seen=seen,
        )
    page["links"] += [
        {"rel": "self", "href": str(request.url), "type": GEOJSON},
        {"rel": "collection", "href": f"{base}/collections/{collection_id}", "type": "application/json"},
        {"rel": "parent", "href": f"{base}/collections/{collection_id}", "type": "application/json"},
    ]
    return _json(page, GEOJSON)


@get(
    "/collections/{collection_id:str}/items/{item_id:str}",
    sync_to_thread=True,
    exclude_from_auth=True,
    permission=Permission.PUBLIC,
)
def read_item(
    collection_id: FromPath[str], item_id: FromPath[str], request: Request[Any, Any, Any], state: State
) -> Response[Any]:
    seen = _visibility(request, state)
    _require_visible(collection_id, seen.hidden)
    with reading(state) as session:
        item = inventory.get_item(session, collection_id, item_id)
        return _json(stac_documents.item_document(item, _base(request, state), seen.auth_of(collection_id)), GEOJSON)


# --- Transactions (administrators) --------------------------------------------------------------


@post("/collections", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=201)
def create_collection(data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    with database(state) as session:
        collection = inventory.put_collection(session, data, create=True)
        return _json(stac_documents.collection_document(collection, _base(request, state)), status_code=201)


@put("/collections/{collection_id:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def replace_collection(
    collection_id: FromPath[str], data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State
) -> Response[Any]:
    if data.get("id", collection_id) != collection_id:
        raise InvalidInput(f"the body's id {data.get('id')!r} is not the collection {collection_id!r} of the URL")
    with database(state) as session:
        collection = inventory.put_collection(session, data | {"id": collection_id}, create=False)
        return _json(stac_documents.collection_document(collection, _base(request, state)))


@delete("/collections/{collection_id:str}", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=204)
def remove_collection(collection_id: FromPath[str], state: State) -> None:
    with database(state) as session:
        inventory.delete_collection(session, collection_id)


@post("/collections/{collection_id:str}/items", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=201)
def create_items(
    collection_id: FromPath[str], data: JSONBody[dict[str, Any]], request: Request[Any, Any, Any], state: State
) -> Response[Any]:
    """One Item (201 with the item) or a FeatureCollection of items (201 with their ids); each asset
    the proxy can fetch is served through it at once (`catalog.stac_transactions`)."""
    public_url = state.settings.resolved_public_url()
    with database(state) as session:
        if data.get("type") == "FeatureCollection":
            ids = []
            for feature in data.get("features") or []:
                row = stac_transactions.write_item(
                    session, _as_written(feature, state), collection_id, mode="create", public_url=public_url
                )
                ids.append(row.id)
            answer = _json({"created": ids}, status_code=201)
        else:
            row = stac_transactions.write_item(
                session, _as_written(data, state), collection_id, mode="create", public_url=public_url
            )
            answer = _json(stac_documents.item_document(row, _base(request, state)), GEOJSON, status_code=201)
    return answer


@put("/collections/{collection_id:str}/items/{item_id:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def replace_item(
    collection_id: FromPath[str],
    item_id: FromPath[str],
    data: JSONBody[dict[str, Any]],
    request: Request[Any, Any, Any],
    state: State,
) -> Response[Any]:
    if data.get("id", item_id) != item_id:
        raise InvalidInput(f"the body's id {data.get('id')!r} is not the item {item_id!r} of the URL")
    with database(state) as session:
        answer = _replace(session, data | {"id": item_id}, collection_id, state, _base(request, state))
    return answer


@patch("/collections/{collection_id:str}/items/{item_id:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def update_item(
    collection_id: FromPath[str],
    item_id: FromPath[str],
    data: JSONBody[dict[str, Any]],
    request: Request[Any, Any, Any],
    state: State,
) -> Response[Any]:
    """Change part of an item: the body is a JSON Merge Patch (RFC 7396) of the item as it is served."""
    if data.get("id", item_id) != item_id:
        raise InvalidInput(f"the patch's id {data.get('id')!r} is not the item {item_id!r} of the URL")
    base = _base(request, state)
    with database(state) as session:
        current = stac_documents.item_document(inventory.get_item(session, collection_id, item_id), base)
        patched = stac_transactions.merge_patch(current, data)
        if not isinstance(patched, dict):
            raise InvalidInput("a patch of an item is a JSON object")
        answer = _replace(session, patched, collection_id, state, base)
    return answer


def _replace(session: Session, item: dict[str, Any], collection_id: str, state: State, base: str) -> Response[Any]:
    """Keep `item` in place of the stored one (PUT and PATCH) and answer with it as served."""
    public_url = state.settings.resolved_public_url()
    row = stac_transactions.write_item(
        session, _as_written(item, state), collection_id, mode="replace", public_url=public_url
    )
    return _json(stac_documents.item_document(row, base), GEOJSON)


def _as_written(item: Any, state: State) -> Any:
    """An item to keep: a protected collection's view (how to authenticate) is not stored with it."""
    if not isinstance(item, dict):
        return item
    return stac_documents.unprotected(item, stac_documents.auth_schemes(state.settings.oidc_issuer))


@delete(
    "/collections/{collection_id:str}/items/{item_id:str}",
    permission=Permission.CONFIGURE,
    sync_to_thread=True,
    status_code=204,
)
def remove_item(collection_id: FromPath[str], item_id: FromPath[str], state: State) -> None:
    with database(state) as session:
        inventory.delete_item(session, collection_id, item_id)


# --- Publishing destinations (administrators) ---------------------------------------------------


class Publication(BaseModel):
    collection: str = Field(description="collection id the destination's data files go to (created if missing)")
    item_id: str | None = Field(default=None, description="item id template, e.g. '$stem' or '${stream}_$time_base'")
    extractor: str | None = Field(default=None, description="metadata (default) or geotiff")
    enabled: bool | None = None


def _publication_view(publication: inventory.StacPublication) -> dict[str, Any]:
    return {
        "destination": publication.destination_name,
        "collection": publication.collection_id,
        "item_id": publication.item_id_template,
        "extractor": publication.extractor,
        "enabled": publication.enabled,
    }


@put("/publications/{destination:str}", permission=Permission.CONFIGURE, sync_to_thread=True)
def publish_destination(destination: FromPath[str], data: JSONBody[Publication], state: State) -> dict[str, Any]:
    """Publish the destination's data files (from now on, as they are stored) into a collection."""
    with database(state) as session:
        publication = stac.set_publication(
            session,
            destination,
            collection_id=data.collection,
            item_id_template=data.item_id,
            extractor=data.extractor,
            enabled=data.enabled,
        )
        return _publication_view(publication)


@get("/publications/{destination:str}", permission=Permission.READ, sync_to_thread=True)
def read_publication(destination: FromPath[str], request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    request_access(request).require_visible(destination)
    with reading(state) as session:
        publication = stac.get_publication(session, destination)
        if publication is None:
            raise NotFound(f"destination {destination!r} is not published")
        return _publication_view(publication)


@post("/publications/{destination:str}/harvest", permission=Permission.CONFIGURE, sync_to_thread=True, status_code=200)
def harvest(destination: FromPath[str], state: State) -> dict[str, Any]:
    """Publish every data file already queued for the destination (items that exist are updated)."""
    with database(state) as session:
        result = stac.harvest_destination(
            session, state.store, destination, public_url=state.settings.resolved_public_url()
        )
    failed = [{"data_file_id": k, "reason": v} for k, v in result.failed.items()]
    return {"destination": destination, "items": result.items, "failed": failed}


stac_router = Router(
    "/stac",
    route_handlers=[
        landing_page,
        conformance,
        queryables,
        list_collections,
        read_collection,
        collection_queryables,
        search_get,
        search_post,
        list_items,
        read_item,
        create_collection,
        replace_collection,
        remove_collection,
        create_items,
        replace_item,
        update_item,
        remove_item,
        publish_destination,
        read_publication,
        harvest,
    ],
    tags=["stac"],
)
