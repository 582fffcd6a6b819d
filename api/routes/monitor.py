"""The monitor: server-rendered pages of destinations, their queues and transfers, hosts and movers,
products' statuses and Prefect deployments, with operators' actions (requeue, stop, hold, release,
priority, destination hold/restart, run a deployment now).

Pages need a log-in (a session cookie, see `api.sessions`); actions need an administrator and a form
token. Flow runs link to the Prefect UI (`PDS_PREFECT_UI_URL`). Pages showing live queues reload
themselves every few seconds.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import MediaType, Request, Response, Router, get, post
from litestar.datastructures import Cookie, State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from api.deployment_runs import PrefectUnavailable, list_deployments, start_run
from api.deps import Id, database, reading
from api.sessions import LOGIN_COOKIE, SESSION_COOKIE, SessionSigner
from blocks.registry import block_for, known_protocols
from catalog import config, data_users, destination_history, monitoring, operations
from catalog.access import Access, Permission, Role, access_of
from catalog.errors import InvalidInput, PdsError
from catalog.models import DataUser, DestinationBase, utcnow
from catalog.products import list_products, streams_of
from catalog.sealing import SECRET_OPTION_PREFIX
from catalog.settings import Settings
from catalog.statuses import TRANSITIONS, TransferStatus
from catalog.submission import check_priority
from catalog.transfers import transfer_public
from catalog.users import authenticate_password

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
TRANSFER_ACTIONS = ("requeue", "stop", "hold", "release", "priority", "schedule-now")
DESTINATION_ACTIONS = ("hold", "restart", "edit", "delete")
#: Destination actions for administrators only; the others for its operators.
ADMINISTRATION = frozenset({"edit", "delete"})
#: The destination settings the monitor's form edits, in the order shown.
DESTINATION_FIELDS = [name for name in DestinationBase.model_fields if name not in ("name", "active")]
#: The host fields the monitor's form edits (the password is write-only, its field starts empty).
HOST_FIELDS = ("protocol", "address", "directory", "login", "comment")
REFRESH_SECONDS = 5


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


TEMPLATES = Environment(
    loader=PackageLoader("api", "templates/monitor"), autoescape=select_autoescape(["html"]), trim_blocks=True
)
TEMPLATES.filters["size"] = _size
TEMPLATES.filters["time"] = _time


def _can(action: str, status: str) -> bool:
    """Whether the status table lets an operator take `action` from `status` (shows its button)."""
    return any(t.action == action and status in t.sources for t in TRANSITIONS)


TEMPLATES.globals["can"] = _can


class Viewer:
    """The logged-in user of a page, with its access (`catalog.access`) and what the forms need."""

    def __init__(self, access: Access, form_token: str) -> None:
        assert access.login is not None
        self.login, self.access, self.form_token = access.login, access, form_token
        self.is_admin = access.is_admin

    def operates(self, destination: str) -> bool:
        """Whether the pages show this viewer the buttons that act on the destination."""
        return self.access.operates(destination)


_SIGNER_LOCK = threading.Lock()


def _signer(state: State) -> SessionSigner:
    """The app's one signer (made on first use, with the key every replica shares; see api.sessions)."""
    with _SIGNER_LOCK:
        if "session_signer" not in state:
            state.session_signer = SessionSigner(state.settings, state.engine)
    signer: SessionSigner = state.session_signer
    return signer


def _viewer(request: Request[Any, Any, Any], state: State, session: DbSession) -> Viewer | None:
    signer = _signer(state)
    found = signer.read(request.cookies.get(SESSION_COOKIE))
    if found is None:
        return None
    access = access_of(session, found.login)
    if access.role is Role.ANONYMOUS:  # deleted or disabled since it logged in
        return None
    return Viewer(access, signer.form_token(found.nonce))


def _page(name: str, status_code: int = 200, **context: Any) -> Response[str]:
    html = TEMPLATES.get_template(name).render(**context)
    return Response(html, media_type=MediaType.HTML, status_code=status_code, headers=_NO_FRAMES)


# The pages hold forms that act on transfers: never inside another site's frame.
_NO_FRAMES = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


def _to_login(request: Request[Any, Any, Any]) -> Redirect:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/monitor/login?{urlencode({'next': target})}", status_code=303)


def _safe_next(value: str | None) -> str:
    """Only pages of the monitor, so a crafted link cannot send a user elsewhere after log-in."""
    if value and value.startswith("/monitor") and not value.startswith("//") and "\\" not in value:
        return value
    return "/monitor"


def _with_message(path: str, message: str) -> str:
    path = _safe_next(path).split("?", 1)[0]
    return f"{path}?{urlencode({'message': message})}"


def _common(state: State, viewer: Viewer, request: Request[Any, Any, Any]) -> dict[str, Any]:
    settings: Settings = state.settings
    return {
        "viewer": viewer,
        "prefect_ui": settings.resolved_prefect_ui_url(),
        "message": request.query_params.get("message"),
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }


# --- log-in ------------------------------------------------------------------------------------


@get("/login", sync_to_thread=False, permission=Permission.PUBLIC)
def login_page(request: Request[Any, Any, Any], state: State, next: FromQuery[str | None] = None) -> Response[str]:
    signer = _signer(state)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_hex(16)
    response = _page("login.html", next=_safe_next(next), form_token=signer.form_token(f"login|{nonce}"), error=None)
    response.set_cookie(LOGIN_COOKIE, nonce, path="/monitor", httponly=True, samesite="strict")
    return response


@post("/login", sync_to_thread=True, status_code=303, permission=Permission.PUBLIC)
def login(request: Request[Any, Any, Any], state: State, data: Form) -> Response[Any]:
    signer = _signer(state)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    next_page = _safe_next(data.get("next"))
    if not nonce or not signer.check_form_token(f"login|{nonce}", data.get("form_token")):
        return _page("login.html", 403, next=next_page, form_token="", error="the log-in form expired; reload the page")
    with database(state) as session:
        user = authenticate_password(session, data.get("login", ""), data.get("password", ""))
    if user is None:
        return _page(
            "login.html",
            401,
            next=next_page,
            form_token=signer.form_token(f"login|{nonce}"),
            error="unknown user or wrong password",
        )
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=signer.issue(user.login),
        path="/monitor",
        httponly=True,
        samesite="strict",
        max_age=int(signer.lifetime),
        secure=request.url.scheme == "https",
    )
    return Redirect(next_page, status_code=303, cookies=[cookie])


@post("/logout", sync_to_thread=False, status_code=303, permission=Permission.PUBLIC)
def logout() -> Redirect:
    return Redirect(
        "/monitor/login", status_code=303, cookies=[Cookie(key=SESSION_COOKIE, value="", path="/monitor", max_age=0)]
    )


# --- pages -------------------------------------------------------------------------------------


@get("/", sync_to_thread=True)
def overview(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Every destination with its state, queue, running transfers and recent rate; the movers."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        destinations = [d for d in monitoring.destinations_overview(session) if viewer.access.sees(d.name)]
        movers = monitoring.movers(session) if viewer.access.has_role(Role.OPERATOR) else []
    return _page(
        "overview.html",
        destinations=destinations,
        movers=movers,
        refresh=REFRESH_SECONDS,
        **_common(state, viewer, request),
    )


@get("/destinations/{name:str}", sync_to_thread=True)
def destination_page(
    name: FromPath[str], request: Request[Any, Any, Any], state: State, status: FromQuery[str | None] = None
) -> Response[Any]:
    """A destination's hosts, state, latest changes and transfers (newest first, optionally one status)."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        view = monitoring.destination_view(session, name) if viewer.access.sees(name) else None
        if view is not None and not viewer.operates(name):  # hosts are operators' knowledge
            view.hosts, view.current_host = [], None
        if view is None:
            return _page("error.html", 404, error=f"no destination {name!r}", **_common(state, viewer, request))
        transfers = monitoring.destination_transfers(session, name, status=status or None)
        # Who held, restarted or changed it: operators' knowledge, as its hosts are.
        history = destination_history.history(session, name, limit=20) if viewer.operates(name) else []
        settings = config.get_destination(session, name).model_dump(mode="json") if viewer.is_admin else {}
    return _page(
        "destination.html",
        destination=view,
        transfers=transfers,
        history=history,
        settings=[(field, settings[field]) for field in DESTINATION_FIELDS] if settings else [],
        status=status or "",
        statuses=[s.value for s in TransferStatus],
        refresh=REFRESH_SECONDS,
        **_common(state, viewer, request),
    )


@get("/transfers/{transfer_id:int}", sync_to_thread=True)
def transfer_page(transfer_id: Id, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """One transfer: where it goes, its attempts and errors, its whole history."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        try:
            viewer.access.transfer_destination(session, transfer_id)
            transfer = transfer_public(session, transfer_id, state.settings.resolved_prefect_ui_url())
        except PdsError as exc:
            return _page("error.html", 404, error=str(exc), **_common(state, viewer, request))
    return _page("transfer.html", transfer=transfer, **_common(state, viewer, request))


@get("/hosts", sync_to_thread=True)
def hosts_page(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        reachable = viewer.access.hosts(session) if viewer.access.has_role(Role.OPERATOR) else frozenset()
        hosts = [h for h in monitoring.hosts_overview(session) if reachable is None or h.name in reachable]
    return _page("hosts.html", hosts=hosts, **_common(state, viewer, request))


@get("/products", sync_to_thread=True)
def products_page(
    request: Request[Any, Any, Any], state: State, stream: FromQuery[str | None] = None, late: FromQuery[bool] = False
) -> Response[Any]:
    """Products' latest statuses (expected, started, completed); late ones first flagged."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        now = utcnow()
        access = viewer.access
        streams = None if access.has_role(Role.OPERATOR) else streams_of(session, access.granted)
        rows = list_products(session, stream=stream or None, late_only=late, now=now, streams=streams)
        shown = [(row, row.is_late(now)) for row in rows]
    return _page(
        "products.html",
        products=shown,
        stream=stream or "",
        late=late,
        refresh=REFRESH_SECONDS,
        **_common(state, viewer, request),
    )


@get("/deployments", sync_to_thread=True)
def deployments_page(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """prefect.yaml's deployments on the Prefect server: schedules, latest run, and "run now"."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
    if not viewer.access.has_role(Role.OPERATOR):
        error = f"user {viewer.login} is not an operator"
        return _page("error.html", 403, error=error, **_common(state, viewer, request))
    try:
        deployments, unavailable = list_deployments(), None
    except PrefectUnavailable as exc:
        deployments, unavailable = [], str(exc)
    return _page(
        "deployments.html",
        deployments=deployments,
        unavailable=unavailable,
        # No reload: each view asks Prefect for every deployment's latest run, and schedules change rarely.
        **_common(state, viewer, request),
    )


# --- actions -----------------------------------------------------------------------------------


def _authorise_action(
    request: Request[Any, Any, Any],
    state: State,
    session: DbSession,
    data: dict[str, str],
    *,
    destination: str | None = None,
) -> Viewer | Response[Any]:
    """The viewer, if its form is genuine and it operates `destination` (None: administrators only)."""
    viewer = _viewer(request, state, session)
    if viewer is None:
        return _to_login(request)
    if data.get("form_token") != viewer.form_token:
        return _page(
            "error.html",
            403,
            error="the form expired or came from elsewhere; reload the page",
            **_common(state, viewer, request),
        )
    allowed = viewer.is_admin if destination is None else viewer.operates(destination)
    if not allowed:
        what = "an administrator" if destination is None else f"an operator of destination {destination!r}"
        return _page("error.html", 403, error=f"user {viewer.login} is not {what}", **_common(state, viewer, request))
    return viewer


def _transfer_action(session: DbSession, transfer_id: int, action: str, data: dict[str, str], by: str) -> str:
    reason = data.get("reason", "").strip()
    if action == "requeue":
        operations.requeue(session, transfer_id, by=by, reason=reason)
    elif action == "stop":
        operations.stop(session, transfer_id, by=by, reason=reason)
    elif action == "hold":
        operations.hold(session, transfer_id, by=by)
    elif action == "release":
        operations.release(session, transfer_id, by=by)
    elif action == "schedule-now":
        operations.schedule_now(session, transfer_id, by=by)
    elif action == "priority":
        operations.set_priority(session, transfer_id, check_priority(data.get("priority", "").strip()), by=by)
    else:
        return f"no action {action!r}; known: {', '.join(TRANSFER_ACTIONS)}"
    return f"transfer {transfer_id}: {action} done"


@post("/transfers/{transfer_id:int}/{action:str}", sync_to_thread=True, status_code=303)
def transfer_action(
    transfer_id: Id, action: FromPath[str], request: Request[Any, Any, Any], state: State, data: Form
) -> Response[Any]:
    back = data.get("next") or f"/monitor/transfers/{transfer_id}"
    with database(state) as session:
        viewer = _viewer(request, state, session)
        try:
            destination = viewer.access.transfer_destination(session, transfer_id) if viewer else ""
        except PdsError as exc:  # out of reach: as if it did not exist
            assert viewer is not None
            return _page("error.html", 404, error=str(exc), **_common(state, viewer, request))
        checked = _authorise_action(request, state, session, data, destination=destination)
        if isinstance(checked, Response):
            return checked
        try:
            message = _transfer_action(session, transfer_id, action, data, checked.login)
        except PdsError as exc:
            session.rollback()
            message = f"transfer {transfer_id}: {action} refused: {exc}"
    return Redirect(_with_message(back, message), status_code=303)


@post("/destinations/{name:str}/{action:str}", sync_to_thread=True, status_code=303)
def destination_action(
    name: FromPath[str], action: FromPath[str], request: Request[Any, Any, Any], state: State, data: Form
) -> Response[Any]:
    back = f"/monitor/destinations/{quote(name, safe='')}"
    with database(state) as session:
        operator_of = None if action in ADMINISTRATION else name  # None: administrators only
        checked = _authorise_action(request, state, session, data, destination=operator_of)
        if isinstance(checked, Response):
            return checked
        try:
            if action == "hold":
                operations.hold_destination(session, name, by=checked.login)
            elif action == "restart":
                operations.restart_destination(session, name, by=checked.login)
            elif action == "edit":
                changes = _destination_changes(config.get_destination(session, name), data)
                if not changes:
                    raise PdsError("nothing changed")
                config.update_destination(session, name, changes, by=checked.login)
            elif action == "delete":
                stopped = 0
                if data.get("force") == "on":
                    stopped = operations.stop_waiting_transfers(session, name, by=checked.login)
                removed = config.delete_destination(session, name)
                message = f"destination {name} deleted with its {removed} transfer(s) ({stopped} stopped first)"
                return Redirect(_with_message("/monitor", message), status_code=303)
            else:
                raise PdsError(f"no action {action!r}; known: {', '.join(DESTINATION_ACTIONS)}")
            message = f"destination {name}: {action} done"
        except (PdsError, sa.exc.SQLAlchemyError) as exc:
            session.rollback()
            message = f"destination {name}: {action} refused: {exc}"
    return Redirect(_with_message(back, message), status_code=303)


def _destination_changes(destination: DestinationBase, data: dict[str, str]) -> dict[str, Any]:
    """The settings the form changed, as text: `update_destination` checks and converts them as the
    API does. An emptied field of an optional setting unsets it; a checkbox is absent when unticked."""
    current = destination.model_dump(mode="json")
    changes: dict[str, Any] = {}
    for field in DESTINATION_FIELDS:
        before = current[field]
        if isinstance(before, bool):
            ticked = data.get(field) == "on"
            if ticked != before:
                changes[field] = ticked
            continue
        if field not in data:
            continue
        value: str | None = data[field].strip()
        if value == "" and (before is None or DestinationBase.model_fields[field].default is None):
            value = None
        if value != (None if before is None else str(before)):
            changes[field] = value
    return changes


@get("/hosts/{name:str}", sync_to_thread=True)
def host_page(name: FromPath[str], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """One host: its settings (secrets never shown), the destinations it serves; an administrator's
    forms to edit or delete it."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        try:
            viewer.access.require_host(session, name)
            host = config.host_public(config.get_host(session, name))
        except PdsError as exc:
            return _page("error.html", 404, error=str(exc), **_common(state, viewer, request))
        served = sorted(h.destinations for h in monitoring.hosts_overview(session) if h.name == name)
    options = json.dumps({k: v for k, v in host.options.items() if v != "***"}, indent=1, sort_keys=True)
    secrets = sorted(k for k, v in host.options.items() if v == "***")
    return _page(
        "host.html",
        host=host,
        fields=[(field, getattr(host, field) or "") for field in HOST_FIELDS],
        options=options,
        secrets=secrets,
        destinations=served[0] if served else [],
        **_common(state, viewer, request),
    )


@post("/hosts/{name:str}/{action:str}", sync_to_thread=True, status_code=303)
def host_action(
    name: FromPath[str], action: FromPath[str], request: Request[Any, Any, Any], state: State, data: Form
) -> Response[Any]:
    """An administrator edits (`edit`) or deletes (`delete`) a host."""
    back = f"/monitor/hosts/{quote(name, safe='')}"
    with database(state) as session:
        checked = _authorise_action(request, state, session, data)  # administrators only
        if isinstance(checked, Response):
            return checked
        try:
            if action == "edit":
                host = config.update_host(
                    session,
                    name,
                    _host_changes(config.get_host(session, name), data),
                    known_protocols=known_protocols(),
                    by=checked.login,
                )
                block_for(host).check()  # refuse what could never work, before it is committed
                message = f"host {name}: saved"
            elif action == "delete":
                config.delete_host(session, name)
                return Redirect(_with_message("/monitor/hosts", f"host {name} deleted"), status_code=303)
            else:
                raise PdsError(f"no action {action!r}; known: edit, delete")
        except (PdsError, sa.exc.SQLAlchemyError) as exc:
            session.rollback()
            message = f"host {name}: {action} refused: {exc}"
    return Redirect(_with_message(back, message), status_code=303)


def _host_changes(host: Any, data: dict[str, str]) -> dict[str, Any]:
    """What the host form changed. The password is changed only when one is typed; options are the
    JSON object shown (secret options, never shown, are kept unless named with a new value); a key
    removed from it is removed from the host."""
    changes: dict[str, Any] = {}
    for field in HOST_FIELDS:
        if field in data and data[field].strip() != (getattr(host, field) or ""):
            changes[field] = data[field].strip()
    if data.get("password"):
        changes["password"] = data["password"]
    active = data.get("active") == "on"
    if active != host.active:
        changes["active"] = active
    if "options" in data:
        try:
            options = json.loads(data["options"] or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"options are not a JSON object: {exc}") from None
        if not isinstance(options, dict):
            raise InvalidInput("options must be a JSON object")
        current = {k: v for k, v in (host.options or {}).items() if not k.startswith(SECRET_OPTION_PREFIX)}
        removed = {k: None for k in current if k not in options}
        changed = {k: v for k, v in options.items() if current.get(k) != v}
        if removed or changed:
            changes["options"] = removed | changed
    return changes


#: A data user's settings the monitor's form edits: text fields, then whole numbers (empty: no limit).
DATA_USER_TEXT = ("description", "country_code")
DATA_USER_NUMBERS = ("upload_quota_bytes", "download_quota_bytes", "quota_period_seconds", "max_connections")
_NOT_ADMIN = "data users are administrators' business"


@get("/datausers", sync_to_thread=True)
def data_users_page(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Every data user (administrators): role, state, quotas, grants."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        if not viewer.is_admin:
            return _page("error.html", 403, error=_NOT_ADMIN, **_common(state, viewer, request))
        logins = session.exec(select(DataUser.login).order_by(col(DataUser.login))).all()
        users = [data_users.describe(session, login) for login in logins]
    return _page("datausers.html", users=users, **_common(state, viewer, request))


@get("/datausers/{login:str}", sync_to_thread=True)
def data_user_page(login: FromPath[str], request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """One data user, with an administrator's forms to edit or delete it."""
    with reading(state) as session:
        viewer = _viewer(request, state, session)
        if viewer is None:
            return _to_login(request)
        if not viewer.is_admin:
            return _page("error.html", 403, error=_NOT_ADMIN, **_common(state, viewer, request))
        try:
            user = data_users.describe(session, login)
        except PdsError as exc:
            return _page("error.html", 404, error=str(exc), **_common(state, viewer, request))
    return _page(
        "datauser.html", user=user, text=DATA_USER_TEXT, numbers=DATA_USER_NUMBERS, **_common(state, viewer, request)
    )


@post("/datausers/{login:str}/{action:str}", sync_to_thread=True, status_code=303)
def data_user_action(
    login: FromPath[str], action: FromPath[str], request: Request[Any, Any, Any], state: State, data: Form
) -> Response[Any]:
    """An administrator edits (`edit`) or deletes (`delete`) a data user; never its own account's
    access (no one locks themselves out)."""
    back = f"/monitor/datausers/{quote(login, safe='')}"
    with database(state) as session:
        checked = _authorise_action(request, state, session, data)  # administrators only
        if isinstance(checked, Response):
            return checked
        try:
            if action == "edit":
                changes = _data_user_changes(data_users.describe(session, login), data)
                if login == checked.login and False in (changes.get("active"), changes.get("is_admin")):
                    raise InvalidInput("you cannot disable yourself or take away your own administrator role")
                if not changes:
                    raise InvalidInput("nothing changed")
                data_users.update_data_user(session, login, changes)
                shown = ", ".join("password" if k == "password" else f"{k} {v!r}" for k, v in sorted(changes.items()))
                message = f"data user {login}: saved ({shown})"
            elif action == "delete":
                if login == checked.login:
                    raise InvalidInput("you cannot delete yourself")
                data_users.delete_data_user(session, login)
                return Redirect(_with_message("/monitor/datausers", f"data user {login} deleted"), status_code=303)
            else:
                raise PdsError(f"no action {action!r}; known: edit, delete")
        except (PdsError, sa.exc.SQLAlchemyError) as exc:
            session.rollback()
            message = f"data user {login}: {action} refused: {exc}"
    return Redirect(_with_message(back, message), status_code=303)


def _data_user_changes(current: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """What the data user form changed: text as typed, numbers checked (empty: no limit), checkboxes
    (absent when unticked), and a password only when one is typed."""
    changes: dict[str, Any] = {}
    for name in DATA_USER_TEXT:
        if name in data and data[name].strip() != (current[name] or ""):
            changes[name] = data[name].strip()
    for name in DATA_USER_NUMBERS:
        if name not in data:
            continue
        text = data[name].strip()
        try:
            value = int(text) if text else None
        except ValueError:
            raise InvalidInput(f"{name} must be a whole number, or empty for no limit") from None
        if value is None and name == "quota_period_seconds":
            raise InvalidInput("quota_period_seconds must be given")
        if value != current[name]:
            changes[name] = value
    for name in ("active", "is_admin"):
        ticked = data.get(name) == "on"
        if ticked != current[name]:
            changes[name] = ticked
    if data.get("password"):
        changes["password"] = data["password"]
    return changes


@post("/deployments/{deployment_id:str}/run", sync_to_thread=True, status_code=303)
def run_deployment_now(
    deployment_id: FromPath[str], request: Request[Any, Any, Any], state: State, data: Form
) -> Response[Any]:
    """Start a flow run of a deployment now (a worker of its pool runs it), as the Prefect UI's "Run"."""
    with database(state) as session:
        checked = _authorise_action(request, state, session, data)
        if isinstance(checked, Response):
            return checked
    try:
        name, run_id = start_run(deployment_id)
        message = f"{name}: flow run {run_id} started by {checked.login}"
    except (PdsError, PrefectUnavailable) as exc:
        message = f"deployment {deployment_id}: run refused: {exc}"
    return Redirect(_with_message("/monitor/deployments", message), status_code=303)


monitor_router = Router(
    "/monitor",
    route_handlers=[
        login_page,
        login,
        logout,
        overview,
        destination_page,
        transfer_page,
        hosts_page,
        products_page,
        deployments_page,
        transfer_action,
        run_deployment_now,
        destination_action,
        host_page,
        host_action,
        data_users_page,
        data_user_page,
        data_user_action,
    ],
    include_in_schema=False,
    # Pages and actions check the viewer's session themselves (a log-in page, not a 401, for a browser).
    opt={"permission": Permission.MONITOR},
)
