"""One settings class for the whole system, read from `PDS_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.cwd() / "pds-data"


class Settings(BaseSettings):
    """Where pds keeps its state and how its processes find each other.

    Every field can be set as `PDS_<FIELD>` (e.g. `PDS_DATABASE_URL`). Unset locations derive from
    `data_dir`, so one directory holds an embedded installation whole.
    """

    model_config = SettingsConfigDict(env_prefix="PDS_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Directory for the embedded stack: database, Data Store, Prefect home, logs."""

    database_url: str = ""
    """SQLAlchemy URL of the pds database; empty means SQLite at `<data_dir>/pds.db`."""

    store_url: str = ""
    """fsspec URL of the Data Store's primary location; empty means `<data_dir>/store`."""

    api_host: str = "127.0.0.1"
    """Interface the Litestar API listens on."""

    api_port: int = 8440
    """Port of the Litestar API (health, portal, transfers, docs at /schema)."""

    api_url: str = ""
    """Base URL clients (the `pds` command, notebooks) use; empty means http://api_host:api_port."""

    prefect_port: int = 4200
    """Port of the local Prefect server that `pds up` starts."""

    admin_user: str = "admin"
    """Login of the administrator created on first start of an empty database."""

    admin_password: SecretStr = SecretStr("admin")
    """Password of that administrator; change it (PDS_ADMIN_PASSWORD) before exposing the API."""

    mover_name: str = "mover-1"
    """Name a mover claims transfers under; restarts under the same name recover its transfers."""

    mover_poll_seconds: float = 0.25
    """How often an idle mover looks for ready transfers."""

    mover_parallel: int = 4
    """Transfers a mover runs at once (each in its own thread)."""

    mover_heartbeat_seconds: float = 5.0
    """How often a mover records that it is alive."""

    mover_stale_seconds: float = 30.0
    """A mover silent this long is dead: its Transferring rows become Interrupted."""

    mover_max_runtime_seconds: float = 3600.0
    """A mover flow run ends after this long so no run grows without bound; its supervisor restarts it."""

    event_log: str | None = None
    """Where event lines (UPH, ERR, …) go: a file path, `-` for standard output, `off` for nowhere;
    unset means `<data_dir>/logs/events.log`."""
    mqtt_url: str = ""
    """MQTT broker for destinations' notifications (`mqtt://user:password@host:1883`, `mqtts://…`);
    empty: no notifications."""
    wis2_centre_id: str = "pds"
    """Centre id in the metadata id (`urn:wmo:md:<centre>:<destination>`) of WIS2 notifications."""
    chunk_size: int = 4 * 1024 * 1024
    """Bytes read and written at a time when streaming data files."""

    proxy_cache_dir: Path | None = None
    """The proxy's online cache (one file per asset); unset means `<data_dir>/proxy-cache`."""
    proxy_pending_status: int = Field(default=202, description="202 or 503")
    """What a pending asset answers: 202 Accepted, or 503 for clients that only retry 503 (fsspec, GDAL < 3.10)."""
    proxy_fetch_retries: int = 2
    """Upstream fetch attempts after the first failure, before the fetch request is marked failed."""
    proxy_fetch_retry_seconds: float = 2.0
    """Wait between two attempts of an upstream fetch."""
    proxy_rewait_seconds: float = 120.0
    """How long a request for an asset whose cached copy was read before (and is now gone) is held while it
    is fetched again: once a HEAD succeeded, range reads are never answered pending."""
    proxy_fetcher_name: str = "proxy-fetcher-1"
    """Name the proxy fetcher claims fetch requests under; a restart recovers its unfinished fetches."""
    proxy_fetcher_poll_seconds: float = 0.05
    """How often an idle proxy fetcher looks for fetch requests."""
    proxy_fetcher_parallel: int = 4
    """Upstream fetches a proxy fetcher runs at once."""
    proxy_retention_seconds: float = 60.0
    """How often the proxy fetcher applies the datasets' cache retention."""
    oidc_issuer: str = ""
    """OIDC issuer whose bearer tokens (JWT, checked against its JWKS) the proxy accepts; empty: none."""
    oidc_audience: str = ""
    """Audience those tokens must carry; empty: not checked."""
    oidc_groups_claim: str = "groups"
    """Claim listing an OIDC user's groups (for dataset readers and QoS group limits)."""
    proxy_public_url: str = ""
    """Base URL of the proxy as clients see it; empty means the API URL."""

    def resolved_proxy_cache_dir(self) -> Path:
        return self.proxy_cache_dir or self.data_dir / "proxy-cache"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pds.db'}"

    def resolved_store_url(self) -> str:
        return self.store_url or str(self.data_dir / "store")

    def resolved_event_log(self) -> str | None:
        if self.event_log is None:
            return str(self.data_dir / "logs" / "events.log")
        return None if self.event_log in ("", "off") else self.event_log

    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")
