"""Data users of the portal and portal policies (administrators only): `/datausers`, `/policies`."""

from __future__ import annotations

from typing import Any

from litestar import Router, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api.deps import database, reading
from catalog import data_users
from catalog.access import Permission
from catalog.data_users import DataUserSpec
from catalog.models import DataUser
from catalog.portal_models import PortalPolicy


class DataUserCreate(BaseModel):
    login: str
    password: str
    is_admin: bool = False
    active: bool = True
    description: str = ""
    country_code: str = ""
    upload_quota_bytes: int | None = Field(default=None, ge=0, description="per quota period; unset: no limit")
    download_quota_bytes: int | None = Field(default=None, ge=0)
    quota_period_seconds: int = Field(default=86400, ge=1, description="the quotas' rolling window")
    max_connections: int | None = Field(default=None, ge=1)
    ssh_keys: list[str] = Field(default_factory=list, description="OpenSSH public key lines, for SFTP")


class GrantBody(BaseModel):
    operations: str = Field(description="comma-separated: get,put,delete,dir,mkdir,rmdir,rename,size,mtime (or all)")


class KeyBody(BaseModel):
    public_key: str


class PolicyBody(BaseModel):
    name: str
    destinations: list[str] = Field(default_factory=list)
    comment: str = ""


@post("/", sync_to_thread=True)
def create_data_user(data: JSONBody[DataUserCreate], state: State) -> dict[str, Any]:
    """Create a data user (a password login for HTTPS, FTP, SFTP; SSH keys for SFTP)."""
    with database(state) as session:
        data_users.create_data_user(session, DataUserSpec(**data.model_dump()))
        return data_users.describe(session, data.login)


@get("/", sync_to_thread=True)
def list_data_users(state: State) -> list[dict[str, Any]]:
    with reading(state) as session:
        logins = session.exec(select(DataUser.login).order_by(col(DataUser.login))).all()
        return [data_users.describe(session, login) for login in logins]


@get("/{login:str}", sync_to_thread=True)
def read_data_user(login: FromPath[str], state: State) -> dict[str, Any]:
    with reading(state) as session:
        return data_users.describe(session, login)


@patch("/{login:str}", sync_to_thread=True)
def update_data_user(login: FromPath[str], data: JSONBody[dict[str, Any]], state: State) -> dict[str, Any]:
    """Change a password, quotas, connections, description, active or is_admin."""
    with database(state) as session:
        data_users.update_data_user(session, login, data)
        return data_users.describe(session, login)


@delete("/{login:str}", sync_to_thread=True, status_code=204)
def delete_data_user(login: FromPath[str], state: State) -> None:
    with database(state) as session:
        data_users.delete_data_user(session, login)


@put("/{login:str}/destinations/{destination:str}", sync_to_thread=True)
def grant_destination(
    login: FromPath[str], destination: FromPath[str], data: JSONBody[GrantBody], state: State
) -> dict[str, Any]:
    """Let the user do these operations at the destination (replaces an earlier grant there)."""
    with database(state) as session:
        data_users.grant(session, login, data.operations, destination=destination)
        return data_users.describe(session, login)


@delete("/{login:str}/destinations/{destination:str}", sync_to_thread=True, status_code=204)
def revoke_destination(login: FromPath[str], destination: FromPath[str], state: State) -> None:
    with database(state) as session:
        data_users.revoke(session, login, destination=destination)


@put("/{login:str}/policies/{policy:str}", sync_to_thread=True)
def grant_policy(
    login: FromPath[str], policy: FromPath[str], data: JSONBody[GrantBody], state: State
) -> dict[str, Any]:
    """Let the user do these operations at every destination of the policy."""
    with database(state) as session:
        data_users.grant(session, login, data.operations, policy=policy)
        return data_users.describe(session, login)


@post("/{login:str}/keys", sync_to_thread=True)
def add_key(login: FromPath[str], data: JSONBody[KeyBody], state: State) -> dict[str, Any]:
    with database(state) as session:
        data_users.add_key(session, login, data.public_key)
        return data_users.describe(session, login)


@post("/{login:str}/s3secret", sync_to_thread=True, status_code=201)
def new_s3_secret(login: FromPath[str], state: State) -> dict[str, str]:
    """A new S3 secret access key (the access key id is the login); shown only in this answer."""
    with database(state) as session:
        secret = data_users.issue_s3_secret(session, login, portal_secret_key(state))
    return {"access_key_id": login, "secret_access_key": secret}


def portal_secret_key(state: State) -> str:
    settings = state.settings
    return str(settings.portal_secret_key.get_secret_value() or settings.admin_password.get_secret_value())


@post("/", sync_to_thread=True)
def create_policy(data: JSONBody[PolicyBody], state: State) -> dict[str, Any]:
    """A policy: a named group of destinations that grants can name (`PUT /datausers/{login}/policies/{name}`)."""
    with database(state) as session:
        policy = data_users.create_policy(session, data.name, data.destinations, data.comment)
        return {
            "name": policy.name,
            "comment": policy.comment,
            "destinations": data_users.policy_destinations(session, policy.name),
        }


@get("/", sync_to_thread=True)
def list_policies(state: State) -> list[dict[str, Any]]:
    with reading(state) as session:
        return [
            {"name": p.name, "comment": p.comment, "destinations": data_users.policy_destinations(session, p.name)}
            for p in session.exec(select(PortalPolicy))
        ]


@put("/{name:str}/destinations/{destination:str}", sync_to_thread=True)
def add_to_policy(name: FromPath[str], destination: FromPath[str], state: State) -> dict[str, Any]:
    with database(state) as session:
        data_users.add_to_policy(session, name, destination)
        return {"name": name, "destinations": data_users.policy_destinations(session, name)}


data_users_router = Router(
    "/datausers",
    opt={"permission": Permission.CONFIGURE},
    tags=["data users"],
    route_handlers=[
        create_data_user,
        list_data_users,
        read_data_user,
        update_data_user,
        delete_data_user,
        grant_destination,
        revoke_destination,
        grant_policy,
        add_key,
        new_s3_secret,
    ],
)
policies_router = Router(
    "/policies",
    opt={"permission": Permission.CONFIGURE},
    tags=["data users"],
    route_handlers=[create_policy, list_policies, add_to_policy],
)
