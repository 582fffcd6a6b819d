"""The access table: every operation of the API's OpenAPI document, called as each role, and the
status each must answer. `test_access.py` checks it against a running app; the documentation's
access page is written from it (`python -m tests.api.access_table` prints the Markdown).

The world the table is called in (made by `test_access.world`): destinations `site1` and `site2`;
the dissemination hosts `h1` (site1) and `h2` (site2), the acquisition host `src1` (site1); one data
file pushed to each destination (`{t1}`/`{d1}` for site1, `{t2}`/`{d2}` for site2). The roles:

- anonymous: no credentials;
- no grant: a data user granted nothing;
- granted: a data user with `get,put,dir` at site1;
- operator: a data user with `all,operate` at site1;
- admin: the administrator.

Requests that change configuration are chosen so that the roles allowed to make them are stopped
by validation (400/404/409) rather than changing the world the next rows are called in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("anonymous", "no grant", "granted", "operator", "admin")


@dataclass(frozen=True)
class Row:
    method: str
    operation: str
    """The path as the OpenAPI document names it."""
    url: str
    """The URL called; `{t1}`, `{t2}`, `{d1}`, `{d2}` are filled in from the world."""
    expected: tuple[int, int, int, int, int]
    """The status for each of `ROLES`, in order."""
    json: Any = None
    content: bytes | None = None
    listing: bool = False
    """A listing: no role but admin may see anything of site2 in the answer."""
    why: str = field(default="", compare=False)


A, NG, G, O, AD = range(5)  # noqa: E741 — indexes of ROLES

# Shorthands for the usual answers of each permission.
PUBLIC = (200, 200, 200, 200, 200)
SIGNED_IN = (401, 200, 200, 200, 200)


def configure(admin: int) -> tuple[int, int, int, int, int]:
    """Administrators only: the others are refused before any work."""
    return (401, 403, 403, 403, admin)


TABLE: tuple[Row, ...] = (
    Row("GET", "/health", "/health", PUBLIC),
    Row("GET", "/me", "/me", SIGNED_IN),
    Row("POST", "/tokens", "/tokens", (401, 201, 201, 201, 201)),
    Row("GET", "/destinations", "/destinations", SIGNED_IN, listing=True),
    Row("POST", "/destinations", "/destinations", configure(409), json={"name": "site1"}),
    Row("GET", "/destinations/{name}", "/destinations/site2", (401, 404, 404, 404, 200), why="out of reach = missing"),
    Row("PATCH", "/destinations/{name}", "/destinations/site1", configure(400), json={"name": "renamed"}),
    Row("DELETE", "/destinations/{name}", "/destinations/none", configure(404)),
    Row("POST", "/destinations/{name}/hold", "/destinations/site2/hold", (401, 403, 403, 404, 200)),
    Row("POST", "/destinations/{name}/restart", "/destinations/site2/restart", (401, 403, 403, 404, 200)),
    Row("GET", "/destinations/{name}/history", "/destinations/site2/history", (401, 403, 403, 404, 200)),
    Row("POST", "/destinations/{name}/hosts", "/destinations/site1/hosts", configure(404), json={"host": "nohost"}),
    Row("DELETE", "/destinations/{name}/hosts/{host}", "/destinations/site1/hosts/nohost", configure(404)),
    Row("POST", "/destinations/{name}/aliases", "/destinations/site1/aliases", configure(404), json={"alias": "none"}),
    Row("GET", "/hosts", "/hosts", (401, 403, 403, 200, 200), listing=True),
    Row("POST", "/hosts", "/hosts", configure(400), json={"name": "h9", "protocol": "gopher", "address": "x"}),
    Row("GET", "/hosts/{name}", "/hosts/h2", (401, 403, 403, 404, 200)),
    Row("PATCH", "/hosts/{name}", "/hosts/h2", configure(400), json={"name": "renamed"}),
    Row("DELETE", "/hosts/{name}", "/hosts/nohost", configure(404)),
    Row("GET", "/transfers/{transfer_id}", "/transfers/{t2}", (401, 404, 404, 404, 200)),
    Row("GET", "/transfers", "/transfers", SIGNED_IN, listing=True),
    Row("POST", "/transfers/{transfer_id}/{operation}", "/transfers/{t2}/hold", (401, 403, 403, 404, 200)),
    Row("GET", "/datafiles/{data_file_id}", "/datafiles/{d2}", (401, 404, 404, 404, 200)),
    Row("GET", "/portal/{destination}/{target}", "/portal/site2/b.bin", (401, 404, 404, 404, 200)),
    Row("PUT", "/portal/{destination}/{target}", "/portal/site2/new.bin", (401, 404, 404, 404, 201), content=b"x"),
    Row("DELETE", "/portal/{destination}/{target}", "/portal/site2/none.bin", (401, 404, 404, 404, 404)),
    Row("HEAD", "/portal/{destination}/{target}", "/portal/site2/b.bin", (401, 404, 404, 404, 200)),
    Row("GET", "/portal", "/portal", SIGNED_IN, listing=True),
    Row("GET", "/portal/{destination}", "/portal/site2", (401, 404, 404, 404, 200)),
    Row("GET", "/stac", "/stac", PUBLIC),
    Row("GET", "/stac/conformance", "/stac/conformance", PUBLIC),
    Row("GET", "/stac/queryables", "/stac/queryables", PUBLIC),
    Row("GET", "/stac/collections", "/stac/collections", PUBLIC),
    Row("POST", "/stac/collections", "/stac/collections", configure(400), json={"id": "bad id!"}),
    Row("GET", "/stac/collections/{collection_id}", "/stac/collections/none", (404,) * 5),
    Row("PUT", "/stac/collections/{collection_id}", "/stac/collections/none", configure(404), json={"id": "none"}),
    Row("DELETE", "/stac/collections/{collection_id}", "/stac/collections/none", configure(404)),
    Row("GET", "/stac/collections/{collection_id}/queryables", "/stac/collections/none/queryables", (404,) * 5),
    Row("GET", "/stac/search", "/stac/search", PUBLIC),
    Row("POST", "/stac/search", "/stac/search", PUBLIC, json={}),
    Row("GET", "/stac/collections/{collection_id}/items", "/stac/collections/none/items", (404,) * 5),
    Row("POST", "/stac/collections/{collection_id}/items", "/stac/collections/none/items", configure(400), json={}),
    Row("GET", "/stac/collections/{collection_id}/items/{item_id}", "/stac/collections/none/items/i", (404,) * 5),
    Row(
        "PUT",
        "/stac/collections/{collection_id}/items/{item_id}",
        "/stac/collections/none/items/i",
        configure(400),
        json={},
    ),
    Row(
        "PATCH",
        "/stac/collections/{collection_id}/items/{item_id}",
        "/stac/collections/none/items/i",
        configure(404),
        json={},
    ),
    Row(
        "DELETE", "/stac/collections/{collection_id}/items/{item_id}", "/stac/collections/none/items/i", configure(404)
    ),
    Row("GET", "/stac/publications/{destination}", "/stac/publications/site2", (401, 404, 404, 404, 404)),
    Row("PUT", "/stac/publications/{destination}", "/stac/publications/site2", configure(400), json={}),
    Row("POST", "/stac/publications/{destination}/harvest", "/stac/publications/site2/harvest", configure(404)),
    Row("GET", "/acquisition/{host}", "/acquisition/h2", (401, 403, 403, 404, 400)),
    Row("POST", "/acquisition/{host}/rules", "/acquisition/src1/rules", configure(400), json={"destination": 1}),
    Row("DELETE", "/acquisition/{host}/rules/{rule_id}", "/acquisition/src1/rules/999", configure(404)),
    Row("PATCH", "/acquisition/{host}/schedule", "/acquisition/src1/schedule", configure(400), json={}),
    Row("POST", "/acquisition/{host}/run", "/acquisition/h2/run", (401, 403, 403, 404, 400)),
    Row(
        "POST",
        "/register",
        "/register",
        (401, 403, 403, 400, 400),
        json={"destination": "site1", "host": "src1", "group": "g", "files": [{"path": "/etc/passwd"}]},
        why="operators of site1 and src1 reach the path check, which refuses a file outside src1's directory",
    ),
    Row("GET", "/groups/{group}", "/groups/none", (401, 404, 404, 404, 404)),
    Row(
        "POST",
        "/products/status",
        "/products/status",
        (401, 403, 403, 201, 201),
        json={"status": "expected", "stream": "oper"},
    ),
    Row("GET", "/products", "/products", SIGNED_IN, listing=True),
    Row("GET", "/datausers", "/datausers", configure(200)),
    Row("POST", "/datausers", "/datausers", configure(400), json={"login": "bad login!", "password": "x"}),
    Row("GET", "/datausers/{login}", "/datausers/none", configure(404)),
    Row("DELETE", "/datausers/{login}", "/datausers/none", configure(404)),
    Row("PATCH", "/datausers/{login}", "/datausers/none", configure(404), json={}),
    Row(
        "PUT",
        "/datausers/{login}/destinations/{destination}",
        "/datausers/none/destinations/site2",
        configure(404),
        json={"operations": "get"},
    ),
    Row(
        "DELETE", "/datausers/{login}/destinations/{destination}", "/datausers/none/destinations/site2", configure(404)
    ),
    Row(
        "PUT",
        "/datausers/{login}/policies/{policy}",
        "/datausers/none/policies/p",
        configure(404),
        json={"operations": "get"},
    ),
    Row("POST", "/datausers/{login}/keys", "/datausers/none/keys", configure(404), json={"public_key": "x"}),
    Row("POST", "/datausers/{login}/s3secret", "/datausers/none/s3secret", configure(404)),
    Row("GET", "/policies", "/policies", configure(200)),
    Row("POST", "/policies", "/policies", configure(400), json={"name": "bad name!"}),
    Row("PUT", "/policies/{name}/destinations/{destination}", "/policies/none/destinations/site2", configure(404)),
    Row("GET", "/proxied-assets", "/proxied-assets", configure(200)),
    Row("POST", "/proxied-assets", "/proxied-assets", configure(400), json={}),
    Row(
        "POST",
        "/proxied-assets/{collection}/{item}/{asset}/cache",
        "/proxied-assets/c/i/a/cache",
        configure(400),
        json={"path": "/no/such/file"},
    ),
    Row("GET", "/proxied-collections/{collection}", "/proxied-collections/none", configure(404)),
    Row("PUT", "/proxied-collections/{collection}", "/proxied-collections/c", configure(400), json={"mode": "x"}),
    Row("PUT", "/qos-quotas/{subject}", "/qos-quotas/nobody", configure(400), json={}),
    Row(
        "POST",
        "/qos-groups/{group}/members/{login}",
        "/qos-groups/g/members/ghost",
        configure(201),
        why="members may be logins of the identity provider that pds has not seen yet",
    ),
)


def markdown() -> str:
    """The table as the documentation shows it."""
    lines = [
        "| operation | " + " | ".join(ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
    ]
    for row in TABLE:
        lines.append(f"| `{row.method} {row.operation}` | " + " | ".join(str(s) for s in row.expected) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
