"""One settings class for the whole system, read from `PDS_*` environment variables."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


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

    public_url: str = ""
    """Base URL the outside world reaches the API at, written into STAC links and asset hrefs
    (`{public_url}/proxy/...`); empty means the API's own address (`api_url`)."""

    prefect_port: int = 4200
    """Port of the local Prefect server that `pds up` starts."""

    admin_user: str = "admin"
    """Login of the administrator created on first start of an empty database."""

    admin_password: SecretStr = SecretStr("admin")
    """Password of that administrator; change it (PDS_ADMIN_PASSWORD) before exposing the API."""

    mover_name: str = "mover-1"
    """Name a mover claims transfers under; restarts under the same name recover its transfers. One
    process at a time holds a name: a second start under a live mover's name is refused."""

    mover_poll_seconds: float = 0.25
    """How often an idle mover looks for ready transfers."""

    mover_parallel: int = 4
    """Transfers a mover runs at once (each in its own thread)."""

    mover_heartbeat_seconds: float = 5.0
    """How often a mover records that it is alive."""

    mover_stale_seconds: float = 30.0
    """A mover silent this long is dead: its Transferring rows become Interrupted."""

    mover_proxy_host: str = ""
    """Run movers as the continental mover of this proxy host (a host of kind `proxy`); empty: a main
    mover."""

    upload_idle_seconds: float = Field(default=600.0, ge=10)
    """An upload (any portal protocol, `pds push`) that receives nothing for this long is failed
    ("upload broke off") and its partial content dropped; the movers look for such uploads."""

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
    retriever_name: str = "retriever-1"
    """Name a retriever claims registered files under; restarts under the same name fetch its
    interrupted files again."""
    retrieval_per_host: int = 4
    """Fetches at once from one source host unless the host's `max_connections` option says otherwise."""
    retrieval_parallel: int = 8
    """Fetches a retriever runs at once over all source hosts."""
    acquisition_poll_seconds: float = 0.5
    """How often the retriever and the acquisition scheduler look for work."""
    discovery_parallel: int = Field(default=4, ge=1)
    """Hosts the acquisition scheduler discovers at once: a slow provider holds one of these, not the others."""
    discovery_lease_seconds: float = Field(default=300.0, ge=5)
    """A discovery pass holds its host in the database for this long, renewed every third of it while
    it runs: another pass of the host meanwhile (from any process) is skipped. The host of a pass whose
    process died is free again after this long."""
    installation_name: str = Field(default="", max_length=64)
    """Names this installation to outside services: MQTT subscriptions connect as
    `pds-<installation>-<host>-<rule id>`. Empty: `db` and 8 hex digits of the SHA-256 of the
    database URL (password left out), the same for every process of the installation."""
    subscription_session_expiry_seconds: int = Field(default=7 * 86400, ge=0, le=0xFFFFFFFF)
    """How long the MQTT broker keeps a stopped subscription's session, and the QoS 1 messages published
    meanwhile, for it (the MQTT 5 Session Expiry Interval); 0: none kept."""
    replicas: list[dict[str, Any]] = Field(default_factory=list)
    """Replica store locations: every data file is copied to each and verified by MD5; reads fall
    back to them when the primary object is missing. JSON, e.g. `[{"url": "/mnt/replica"},
    {"url": "s3://bucket/pds", "options": {"endpoint_url": "…", "key": "…", "secret": "…"}}]`."""
    data_retention_seconds: float = 7 * 86400.0
    """The purge removes a data file this long after the last thing that happened to it, once
    every transfer of it is Done, Failed or Stopped."""
    multipart_retention_seconds: float = 7 * 86400.0
    """The purge removes S3 multipart uploads to the portal begun this long ago and never completed
    nor aborted, with their parts."""
    portal_ftp_port: int = 8421
    """Port of the Data Portal's FTP server (explicit FTPS on the same port when a certificate is set);
    0: `pds up` does not start it."""
    portal_sftp_port: int = 8422
    """Port of the Data Portal's SFTP server; 0: `pds up` does not start it."""
    portal_host: str = "127.0.0.1"
    """Interface the FTP and SFTP portal servers listen on."""
    portal_passive_ports: str = ""
    """FTP passive port range `first-last`; empty lets the system pick (safe under many sessions)."""
    portal_ftp_masquerade_address: str = ""
    """Address the FTP server gives clients in its passive-mode answers, when they reach it through NAT
    (a container's published port, a load balancer); empty: the address the client connected to."""
    portal_tls_certificate: str = ""
    """PEM file with certificate and key for FTPS; empty: FTP without TLS."""
    portal_ssh_host_key: str = ""
    """The SFTP server's host key file; empty means `<data_dir>/portal/ssh_host_key` (made on first start)."""
    portal_temporary_patterns: str = ".*,*.tmp,*.part,*.partial"
    """Names (shell patterns, comma-separated) uploads carry while incomplete: held StandBy until renamed."""
    portal_fetch_wait_seconds: float = 30.0
    """How long an FTP or SFTP read of a file registered without retrieval waits for its content to
    be fetched before it fails with "try again later" (HTTPS and S3 answer 503 with Retry-After at once)."""
    portal_secret_key: SecretStr = SecretStr("")
    """Key that encrypts data users' S3 secret keys in the database; empty derives one from the admin
    password (set it in production: changing it invalidates every S3 secret)."""
    host_secret_key: SecretStr = SecretStr("")
    """Key that seals hosts' passwords and `secret_*` options in the database (`catalog.sealing`, which
    reads it from the environment itself); `pds up` makes `<data_dir>/host-secret.key` when unset.
    Every process that connects to hosts needs the same key."""
    host_secret_key_previous: SecretStr = SecretStr("")
    """Keys being rotated out (comma-separated): they still open sealed values, and `pds migrate`
    seals those values again under `host_secret_key` (`catalog.sealing` reads it itself too)."""
    chunk_size: int = 4 * 1024 * 1024
    """Bytes read and written at a time when streaming data files."""
    prefect_ui_url: str = ""
    """Base URL of the Prefect UI, for the monitor's links to flow runs; empty means the local server
    of `pds up` (http://127.0.0.1:<prefect_port>)."""
    session_secret: SecretStr = SecretStr("")
    """Key that signs the monitor's session cookies and form tokens. Empty: a random key kept in the
    database, made at first start and shared by every API replica (sessions survive restarts)."""
    session_hours: float = 12.0
    """How long a monitor log-in lasts."""

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
    proxy_retrieval_wait_seconds: float = 600.0
    """How long a proxy fetch of a file registered without retrieval waits for the retriever to fetch it
    into the Data Store before the attempt fails (retried like any failed fetch)."""
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
    stop_grace_seconds: float = 60.0
    """How long a stopping `pds up` waits for transfers in flight to finish before it interrupts them
    (they are sent again at the next start); a second Ctrl-C interrupts them at once."""
    instance_id: str = ""
    """Set by `pds up` for its children: the API's /health reports it, so `pds up` knows the API that
    answers is its own child and not another stack's."""

    def resolved_installation_name(self) -> str:
        if self.installation_name:
            return self.installation_name
        url = make_url(self.resolved_database_url()).render_as_string(hide_password=True)
        return "db" + hashlib.sha256(url.encode()).hexdigest()[:8]

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

    def resolved_prefect_ui_url(self) -> str:
        return (self.prefect_ui_url or f"http://127.0.0.1:{self.prefect_port}").rstrip("/")

    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    def resolved_public_url(self) -> str:
        return (self.public_url or self.resolved_api_url()).rstrip("/")
