"""Items written through the STAC Transactions extension (POST, PUT, PATCH): their assets served by the proxy.

An item written by hand is kept like a harvested one (`catalog.stac.provider_item`): each asset whose
href the proxy can fetch (an `http://`, `https://` or `s3://` URL, a key fit for a URL path) gets
the proxy URL `{public_url}/proxy/{collection}/{item}/{asset}` as its href, the href the writer gave
is kept as the asset's alternate `upstream` (alternate-assets extension, declared in
`stac_extensions`), and the proxy learns the upstream in the same transaction, so the writer can
read the asset through the proxy at once. Nothing the writer wrote is dropped: other alternates,
roles, media type, sizes and checksums stay as given.

- An href already at this pds's proxy (an item sent back as it was served, or an asset borrowed from
  another item) is never wrapped again. When it is the asset's own proxy URL, its alternate
  `upstream` says where the bytes come from.
- The proxy's registration changes only when the upstream does: a new asset, or an update whose
  upstream href differs from the stored item's. Re-registering a new upstream drops the cached copy
  (`catalog.proxy.STALE_CACHE_FILES`; the caller removes the files once the item is committed).
  An item sent back unchanged leaves the registration alone, so a harvested item's stored copy or
  host credentials are kept.
- Other hrefs (relative paths, `file://`, `ftp://`, …) are kept as given and not proxied.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from catalog.errors import InvalidInput
from catalog.inventory import StacItem, check_id, item_row, put_item
from catalog.proxy import get_asset, register_asset
from catalog.stac import ALTERNATE_ASSETS, proxiable, with_upstream


def proxy_root(public_url: str) -> str:
    """The prefix of every proxy URL of this pds."""
    return f"{public_url.rstrip('/')}/proxy/"


def upstream_of(asset: Any) -> str | None:
    """The upstream href an asset names: its alternate `upstream`, else its own href when that is not
    at a proxy; None for what is not an asset with an href."""
    if not isinstance(asset, dict):
        return None
    alternate = (asset.get("alternate") or {}).get("upstream") if isinstance(asset.get("alternate"), dict) else None
    if isinstance(alternate, dict) and isinstance(alternate.get("href"), str):
        return str(alternate["href"])
    href = asset.get("href")
    return href if isinstance(href, str) and "/proxy/" not in href else None


def proxied_item(
    body: dict[str, Any], collection_id: str, *, public_url: str, before: dict[str, str | None] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The item as it is kept, and {asset key: upstream href} of the assets the proxy serves.

    `before`: {asset key: upstream} of the item as stored, whose alternates `upstream` pds wrote and
    may replace when the writer gives an asset a new href."""
    before = before or {}
    item_id = check_id(body.get("id"), "item")
    root = proxy_root(public_url)
    base = f"{root}{collection_id}/{item_id}"
    assets: dict[str, Any] = {}
    upstreams: dict[str, str] = {}
    for key, asset in (body.get("assets") or {}).items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise InvalidInput(f"asset {key!r} of item {item_id!r} needs an href (a string)")
        href = asset["href"]
        if href.startswith(root):  # at this pds's proxy already: never wrapped twice
            upstream = upstream_of(asset)
            if href == f"{base}/{key}" and upstream is not None and proxiable(key, upstream):
                upstreams[key] = upstream
            assets[key] = asset
        elif proxiable(key, href):
            named = upstream_of(asset)
            if named not in (href, before.get(key)):  # the writer's own alternate would be lost: refused
                raise InvalidInput(
                    f"asset {key!r} of item {item_id!r} has an alternate 'upstream' ({named}) other than its href "
                    f"({href}); pds keeps a proxied asset's upstream under that name: rename that alternate"
                )
            assets[key] = with_upstream(asset, f"{base}/{key}", href)
            upstreams[key] = href
        else:
            assets[key] = asset
    if not upstreams:
        return body, upstreams
    declared = list(body.get("stac_extensions") or [])
    family = ALTERNATE_ASSETS.rsplit("/v", 1)[0] + "/"
    if not any(str(url).startswith(family) for url in declared):
        declared.append(ALTERNATE_ASSETS)
    return body | {"assets": assets, "stac_extensions": declared}, upstreams


def write_item(session: Session, body: dict[str, Any], collection_id: str, *, mode: str, public_url: str) -> StacItem:
    """Check, keep and register one item written through the Transactions extension.

    `mode` as `catalog.inventory.put_item` takes it (`create`, `replace`). The caller's transaction
    holds both the item and the proxy's registrations, so a refused item leaves neither behind.
    """
    if not isinstance(body, dict):
        raise InvalidInput(f"an item is a JSON object, not {type(body).__name__}")
    item_id = check_id(body.get("id"), "item")
    previous = session.get(StacItem, (collection_id, item_id))
    before = {key: upstream_of(asset) for key, asset in (previous.assets if previous is not None else {}).items()}
    kept, upstreams = proxied_item(body, collection_id, public_url=public_url, before=before)
    row = put_item(session, item_row(kept, collection_id), mode=mode)
    for key, upstream in upstreams.items():
        if before.get(key) == upstream and get_asset(session, collection_id, item_id, key) is not None:
            continue  # unchanged: the registration (a stored copy, a host's credentials) stays as it is
        asset = kept["assets"][key]
        size = asset.get("file:size")
        checksum = asset.get("file:checksum")
        register_asset(
            session,
            collection_id,
            item_id,
            key,
            upstream,
            media_type=str(asset.get("type") or "application/octet-stream"),
            size=size if isinstance(size, int) and size >= 0 else None,
            etag=str(checksum) if checksum else None,
        )
    return row


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as RFC 7396 JSON Merge Patch says (the STAC Transactions PATCH):
    objects merge key by key, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
