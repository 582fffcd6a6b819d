"""Files registered without retrieval are fetched on first use: listed in the Data Portal before they
are fetched, asked for by the first read over HTTPS, S3, SFTP or FTP (one upstream fetch however
many read at once), served once fetched, expired like any other, and read from a replica when the
primary copy is gone. The source is nginx; the portal is the real API, SFTP and FTP servers."""

from __future__ import annotations

import asyncio
import ftplib
import os
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import asyncssh
import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.data_users import DataUserSpec, create_data_user, grant, issue_s3_secret
from catalog.database import session_scope
from catalog.events import EventLog
from catalog.models import DataFile, DataTransfer, TransferHistory, utcnow
from catalog.on_demand import request_fetch
from catalog.portal import Portal
from catalog.purge import expired_data_files, remove_data_files
from catalog.retrieval import claim_fetches
from catalog.store import DataStore
from catalog.transfers import expire_due
from tasks.discovery import discover_rule
from tasks.retrieval import retrieve
from tests.acquisition.conftest import Source, acquisition_setup, attach_local_site, nginx_provider
from tests.query_plans import sqlite_plan
from tests.servers._common import wait_until

PASSWORD = "pw-alice-1"
NAMES = ("a.bin", "b.bin", "c.bin", "d.bin")


class Retriever:
    """The retriever's ordinary claim-and-fetch loop, in a thread of the test process."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            with session_scope(self.rt.engine) as session:
                fetches = claim_fetches(session, "retriever-test", 10, default_per_host=4)
            for fetch in fetches:
                retrieve(fetch, "retriever-test")
            self.stop_event.wait(0.05)

    def start(self) -> Retriever:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)


class World:
    def __init__(self, rt, nginx, directory: str, payloads: dict[str, bytes], portal: Portal) -> None:
        self.rt, self.nginx, self.directory, self.payloads, self.portal = rt, nginx, directory, payloads, portal
        self.retriever: Retriever | None = None

    def start_retriever(self) -> None:
        self.retriever = Retriever(self.rt).start()

    def upstream_reads(self, name: str) -> int:
        """GET requests nginx answered for the file (retrievals), from its access log."""
        log = (self.nginx.root / "access.log").read_text()
        return sum(1 for line in log.splitlines() if f'"GET {self.directory}/data/{name} ' in line)

    def transfer(self, name: str) -> DataTransfer:
        with Session(self.rt.engine) as session:
            return session.exec(select(DataTransfer).where(DataTransfer.target == name)).one()

    def actions(self, name: str) -> list[str]:
        transfer_id = self.transfer(name).id
        with Session(self.rt.engine) as session:
            rows = session.exec(
                select(TransferHistory.action)
                .where(TransferHistory.transfer_id == transfer_id)
                .order_by(col(TransferHistory.id))
            )
            return list(rows)


@pytest.fixture
def world(rt, nginx):
    payloads = {f"data/{name}": os.urandom(3000 + i) for i, name in enumerate(NAMES)}
    host, root = nginx_provider(nginx, "provider-http", payloads)
    host_row, rule = acquisition_setup(
        rt.engine, Source(host, None, root), directory="data", listing_format="html", no_retrieval=True
    )
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == len(NAMES)
    with session_scope(rt.engine) as session:
        create_data_user(session, DataUserSpec("alice", PASSWORD))
        grant(session, "alice", "all", destination="acq")
    portal = Portal(rt.engine, rt.store, EventLog(None), server_name="test-portal", fetch_wait_seconds=0.5)
    made = World(rt, nginx, host.directory, {k.removeprefix("data/"): v for k, v in payloads.items()}, portal)
    yield made
    if made.retriever is not None:
        made.retriever.stop()


@pytest.fixture
def served(world, settings, certificate):
    from api.app import create_app
    from tests.portal.conftest import ServedApi

    app = create_app(settings, engine=world.rt.engine, store=world.rt.store, portal=world.portal)
    api = ServedApi(app, *certificate).start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    from tests.servers._common import self_signed_certificate

    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    self_signed_certificate(cert, key)
    return cert, key


def http_client(served) -> httpx.Client:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.Client(
        base_url=served.url,
        auth=("alice", PASSWORD),
        verify=ssl.create_default_context(cafile=str(served.cert)),
        timeout=60,
        limits=limits,
    )


def read_until_served(
    client: httpx.Client, path: str, deadline: float = 60, *, pending: int = 503
) -> tuple[list[int], bytes]:
    """GET until 200; the statuses seen on the way, and the body. Meanwhile every answer must be
    `pending` with a Retry-After: the portal's 503, or the proxy's 202 (with a JSON "pending")."""
    seen = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        answer = client.get(path)
        seen.append(answer.status_code)
        if answer.status_code == 200:
            return seen, answer.content
        assert answer.status_code == pending, answer.text
        assert int(answer.headers["retry-after"]) > 0
        if pending == 202:
            assert answer.json()["status"] == "pending"
        time.sleep(0.1)
    raise AssertionError(f"{path} never served: {seen[-5:]}")


def test_the_retriever_claims_requested_files_only_and_never_reads_the_others(world):
    """Files registered without retrieval wait for a request; the retriever's claim is answered from
    its queue index, which keeps them apart (a million of them cost an idle poll nothing)."""
    engine = world.rt.engine

    def claim() -> list[int]:
        with session_scope(engine) as session:
            return [fetch.data_file_id for fetch in claim_fetches(session, "r", 10, default_per_host=4)]

    def awaiting() -> dict[str, bool]:
        with Session(engine) as session:
            return {t.target: t.awaiting_request for t in session.exec(select(DataTransfer))}

    assert awaiting() == dict.fromkeys(NAMES, True)
    assert claim() == []
    if engine.dialect.name == "sqlite":
        plan = sqlite_plan(engine, claim, marker="JOIN source_file")
        assert any("ix_data_transfer_retrieval (status=? AND awaiting_request=?)" in step for step in plan), plan

    wanted = world.transfer("b.bin").data_file_id
    with session_scope(engine) as session:
        assert request_fetch(session, wanted, by="test", reason="a read through the portal")
    assert awaiting() == {name: name != "b.bin" for name in NAMES}
    assert claim() == [wanted]
    assert claim() == []


def test_the_portal_lists_on_demand_files_and_https_reads_fetch_them_once(world, served):
    with http_client(served) as client:
        listing = client.get("/portal/acq/", params={"format": "json"}).json()
        assert [(e["name"], e["size"], e["fetched"]) for e in listing["entries"]] == [
            (name, len(world.payloads[name]), False) for name in NAMES
        ]
        first = client.get("/portal/acq/a.bin")
        assert first.status_code == 503 and first.headers["retry-after"] == "5"
        assert first.json()["error"] == "NotYetAvailable"
        head = client.head("/portal/acq/b.bin")
        assert head.status_code == 503 and head.headers["retry-after"] == "5"
        assert client.get("/portal/acq/a.bin").status_code == 503  # asked already: nothing more happens
        assert world.actions("a.bin") == ["create", "request"]
        assert world.actions("c.bin") == ["create"]  # not read: not asked for

        world.start_retriever()
        _, body = read_until_served(client, "/portal/acq/a.bin")
        assert body == world.payloads["a.bin"]
        head = client.head("/portal/acq/b.bin")
        for _ in range(100):
            if head.status_code == 200:
                break
            time.sleep(0.1)
            head = client.head("/portal/acq/b.bin")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(world.payloads["b.bin"]))
        listing = client.get("/portal/acq/", params={"format": "json"}).json()
        fetched = {e["name"]: e["fetched"] for e in listing["entries"]}
        assert fetched == {"a.bin": True, "b.bin": True, "c.bin": False, "d.bin": False}
    assert world.actions("a.bin") == ["create", "request", "fetch", "fetched", "downloaded"]
    assert world.transfer("c.bin").status == "Preset"  # never asked: never fetched
    assert (world.upstream_reads("a.bin"), world.upstream_reads("c.bin")) == (1, 0)


def test_fifty_concurrent_first_reads_make_one_upstream_fetch(world, served):
    world.start_retriever()
    barrier = threading.Barrier(50)

    def read(_: int) -> tuple[list[int], bytes]:
        barrier.wait(timeout=30)
        return read_until_served(client, "/portal/acq/c.bin")

    with http_client(served) as client, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(read, range(50)))
    assert all(body == world.payloads["c.bin"] for _, body in answers)
    assert any(503 in seen for seen, _ in answers)
    assert world.upstream_reads("c.bin") == 1
    actions = world.actions("c.bin")
    assert actions.count("request") == 1 and actions.count("fetch") == 1 and actions.count("fetched") == 1
    assert world.transfer("c.bin").status == "Done"  # fifty whole downloads ending together record Done


def test_s3_reads_answer_slow_down_until_fetched_and_boto3_retries_them(world, served):
    with session_scope(world.rt.engine) as session:
        secret = issue_s3_secret(session, "alice", "admin")

    def s3(retries: dict) -> object:
        return boto3.client(
            "s3",
            endpoint_url=f"{served.url}/s3",
            aws_access_key_id="alice",
            aws_secret_access_key=secret,
            region_name="eu-central-1",
            verify=str(served.cert),
            config=Config(s3={"addressing_style": "path"}, retries=retries),
        )

    once = s3({"max_attempts": 1})
    listed = once.list_objects_v2(Bucket="acq")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [(n, len(world.payloads[n]), '""') for n in NAMES]
    for call in (once.get_object, once.head_object):
        with pytest.raises(ClientError) as refused:
            call(Bucket="acq", Key="d.bin")
        meta = refused.value.response["ResponseMetadata"]
        assert meta["HTTPStatusCode"] == 503 and meta["HTTPHeaders"]["retry-after"] == "5"
    assert refused.value.response["Error"]["Code"] in ("SlowDown", "503")  # a HEAD answer has no body

    world.start_retriever()
    patient = s3({"max_attempts": 10, "mode": "standard"})
    assert patient.get_object(Bucket="acq", Key="d.bin")["Body"].read() == world.payloads["d.bin"]
    assert world.upstream_reads("d.bin") == 1


def sftp_read(port: int, path: str) -> bytes:
    async def read() -> bytes:
        async with (
            asyncssh.connect(
                "127.0.0.1", port, username="alice", password=PASSWORD, known_hosts=None, client_keys=None
            ) as connection,
            connection.start_sftp_client() as sftp,
            sftp.open(path, "rb") as file,
        ):
            return await file.read()

    return asyncio.run(read())


def test_an_sftp_read_waits_for_the_fetch_and_fails_try_again_later_past_the_bound(world, tmp_path):
    from tests.portal.conftest import SftpPortal

    server = SftpPortal(world.portal, tmp_path / "host_key").start()
    try:
        started = time.monotonic()
        with pytest.raises(asyncssh.SFTPFailure, match="try again later"):
            sftp_read(server.port, "/acq/a.bin")  # no retriever: the bound (0.5 s) passes
        assert time.monotonic() - started >= 0.5
        world.start_retriever()
        world.portal.fetch_wait_seconds = 30
        assert sftp_read(server.port, "/acq/b.bin") == world.payloads["b.bin"]  # waits, then reads
        assert sftp_read(server.port, "/acq/a.bin") == world.payloads["a.bin"]
    finally:
        server.stop()
    assert (world.upstream_reads("a.bin"), world.upstream_reads("b.bin")) == (1, 1)


def test_an_ftp_retr_waits_for_the_fetch_and_answers_450_past_the_bound(world):
    from tests.portal.conftest import FtpPortal

    server = FtpPortal(world.portal).start()
    try:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", server.port, timeout=60)
            ftp.login("alice", PASSWORD)
            listed = []
            ftp.retrlines("LIST /acq", listed.append)
            assert [line.split()[-1] for line in listed] == list(NAMES)
            assert [int(line.split()[4]) for line in listed] == [len(world.payloads[n]) for n in NAMES]
            with pytest.raises(ftplib.error_temp, match="^450 .*being fetched"):
                ftp.retrbinary("RETR /acq/a.bin", lambda _: None)
            world.start_retriever()
            world.portal.fetch_wait_seconds = 30
            chunks: list[bytes] = []
            ftp.retrbinary("RETR /acq/c.bin", chunks.append)
            assert b"".join(chunks) == world.payloads["c.bin"]
    finally:
        server.stop()
    assert world.upstream_reads("c.bin") == 1


def test_on_demand_files_expire_like_any_other(world, served):
    world.start_retriever()
    with http_client(served) as client:
        _, body = read_until_served(client, "/portal/acq/a.bin")
        assert body == world.payloads["a.bin"]
        world.retriever.stop()

        def pulled() -> bool:  # the API records the whole download once the body is out: soon, not at once
            with Session(world.rt.engine) as session:
                a = session.exec(select(DataTransfer).where(DataTransfer.target == "a.bin")).one()
                return a.status == "Done"

        wait_until(pulled, 30, "the download of a.bin to be recorded Done")
        with session_scope(world.rt.engine) as session:  # b.bin is never read; its lifetime ends
            transfer = session.exec(select(DataTransfer).where(DataTransfer.target == "b.bin")).one()
            transfer.expires_at = utcnow() - timedelta(seconds=1)
            session.add(transfer)
        with session_scope(world.rt.engine) as session:
            assert len(expire_due(session, by="test")) == 1
        with session_scope(world.rt.engine) as session:
            expired = expired_data_files(session, timedelta(0), now=utcnow() + timedelta(seconds=1))
            assert len(expired) == 2  # the fetched and downloaded a.bin, the expired b.bin
            remove_data_files(session, [e.data_file_id for e in expired])
        for e in expired:
            if e.store_key:
                world.rt.store.delete(e.store_key)
        names = [e["name"] for e in client.get("/portal/acq/", params={"format": "json"}).json()["entries"]]
        assert names == ["c.bin", "d.bin"]
        assert client.get("/portal/acq/a.bin").status_code == 404
        assert client.get("/portal/acq/b.bin").status_code == 404
    with Session(world.rt.engine) as session:
        assert len(session.exec(select(SourceFile)).all()) == 2


def test_portal_reads_fall_back_to_a_replica_when_the_primary_copy_is_missing(world, served, tmp_path):
    world.start_retriever()
    with http_client(served) as client:
        _, body = read_until_served(client, "/portal/acq/d.bin")
        with Session(world.rt.engine) as session:
            data_file = session.exec(select(DataFile).where(DataFile.name == "d.bin")).one()
        assert data_file.store_key
        replica = DataStore.from_url(str(tmp_path / "replica"))
        replica.put_stream(world.rt.store.iter_chunks(data_file.store_key), data_file.store_key)
        world.rt.store.replicas = [replica]
        world.rt.store.delete(data_file.store_key)
        again = client.get("/portal/acq/d.bin")
        assert again.status_code == 200 and again.content == world.payloads["d.bin"]
        ranged = client.get("/portal/acq/d.bin", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == world.payloads["d.bin"][10:20]


def test_an_on_demand_file_deleted_in_the_portal_before_its_retrieval_is_never_fetched(world, served):
    with http_client(served) as client:
        assert client.delete("/portal/acq/b.bin").status_code == 204
        assert client.get("/portal/acq/b.bin").status_code == 404
        names = [e["name"] for e in client.get("/portal/acq/", params={"format": "json"}).json()["entries"]]
        assert names == ["a.bin", "c.bin", "d.bin"]
    assert world.transfer("b.bin").status == "Stopped"
    world.start_retriever()
    time.sleep(0.5)
    assert world.upstream_reads("b.bin") == 0


# --- the federated proxy and the movers meet files registered without retrieval ------------------


class ProxyFetcher:
    """The proxy fetcher's claim-and-fetch loop (`flows.proxy_fetch`), in a thread of the test process."""

    def __init__(self, rt, cache_dir) -> None:
        self.rt, self.cache_dir = rt, cache_dir
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from catalog.errors import TransferError
        from catalog.proxy import claim_fetches as claim_proxy_fetches
        from catalog.proxy import record_fetch_attempt_failed
        from tasks.proxy_fetch import fetch_into_cache

        while not self.stop_event.is_set():
            with session_scope(self.rt.engine) as session:
                jobs = claim_proxy_fetches(session, "proxy-fetcher-test", 4, now=utcnow())
            for job in jobs:
                try:
                    fetch_into_cache(self.rt.engine, self.cache_dir, job, store=self.rt.store, retrieval_wait=60)
                except TransferError as exc:
                    with session_scope(self.rt.engine) as session:
                        record_fetch_attempt_failed(session, job, str(exc), final=True)
            self.stop_event.wait(0.05)

    def start(self) -> ProxyFetcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)


@pytest.fixture
def proxied(world, served, settings):
    """The destination published as collection `files` (public, a miss answered at once), its items'
    assets served by the proxy, and a proxy fetcher running; yields {file name: proxy URL path}."""
    from catalog.proxy import ProxyAsset, set_policy
    from catalog.stac import harvest_destination, set_publication

    with session_scope(world.rt.engine) as session:
        set_publication(session, "acq", collection_id="files")
        harvest_destination(session, world.rt.store, "acq", public_url=served.url)
        set_policy(session, "files", public=True, sync_wait_seconds=0)
    with Session(world.rt.engine) as session:
        assets = session.exec(select(ProxyAsset).where(ProxyAsset.collection == "files")).all()
    paths = {a.upstream_href.rsplit("/", 1)[-1]: f"/proxy/files/{a.item}/{a.asset}" for a in assets}
    assert set(paths) == set(NAMES)  # every file, none of them fetched yet
    fetcher = ProxyFetcher(world.rt, settings.resolved_proxy_cache_dir()).start()
    yield paths
    fetcher.stop()


def proxy_read_until_served(client: httpx.Client, path: str) -> tuple[list[int], bytes]:
    """GET through the proxy until 200 (pending: 202 with Retry-After)."""
    return read_until_served(client, path, pending=202)


def test_a_proxy_read_asks_for_the_retrieval_and_serves_the_file_once_fetched(world, served, proxied):
    with http_client(served) as client:
        first = client.get(proxied["a.bin"])
        assert first.status_code == 202 and int(first.headers["retry-after"]) > 0
        wait_until(lambda: "request" in world.actions("a.bin"), 30, "the proxy to ask for the retrieval of a.bin")
        assert client.get(proxied["a.bin"]).status_code == 202  # no retriever yet: still pending
        assert world.upstream_reads("a.bin") == 0

        world.start_retriever()
        seen, body = proxy_read_until_served(client, proxied["a.bin"])
        assert body == world.payloads["a.bin"]
        # The portal reads the same fetched copy: nothing more from the source.
        assert client.get("/portal/acq/a.bin").content == world.payloads["a.bin"]
    assert world.upstream_reads("a.bin") == 1
    assert world.actions("a.bin")[:4] == ["create", "request", "fetch", "fetched"]
    assert world.transfer("b.bin").status == "Preset"  # never read: never fetched


def test_fifty_concurrent_first_proxy_reads_make_one_upstream_fetch(world, served, proxied):
    world.start_retriever()
    barrier = threading.Barrier(50)

    def read(_: int) -> tuple[list[int], bytes]:
        barrier.wait(timeout=30)
        return proxy_read_until_served(client, proxied["c.bin"])

    with http_client(served) as client, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(read, range(50)))
    assert all(body == world.payloads["c.bin"] for _, body in answers)
    assert any(202 in seen for seen, _ in answers)  # the first answers said "retry later"
    assert world.upstream_reads("c.bin") == 1
    actions = world.actions("c.bin")
    assert actions.count("request") == 1 and actions.count("fetch") == 1 and actions.count("fetched") == 1


def test_the_proxy_serves_a_fetched_file_from_a_replica_when_the_primary_copy_is_gone(world, served, proxied, tmp_path):
    world.start_retriever()
    with http_client(served) as client:
        read_until_served(client, "/portal/acq/d.bin")  # fetched through the portal, not read by the proxy yet
        with Session(world.rt.engine) as session:
            data_file = session.exec(select(DataFile).where(DataFile.name == "d.bin")).one()
        replica = DataStore.from_url(str(tmp_path / "replica"))
        replica.put_stream(world.rt.store.iter_chunks(data_file.store_key), data_file.store_key)
        world.rt.store.replicas = [replica]
        world.rt.store.delete(data_file.store_key)
        _, body = proxy_read_until_served(client, proxied["d.bin"])
    assert body == world.payloads["d.bin"]
    assert world.upstream_reads("d.bin") == 1  # the replica, not the source, filled the proxy's cache


def test_a_mover_meeting_an_unretrieved_file_asks_for_it_and_sends_it_once_fetched(
    rt, local_source, prefect_server, tmp_path
):
    """A transfer of a file registered without retrieval, requeued by an operator, is claimed by the
    mover: it goes back to Preset and asks for the retrieval instead of failing, then is sent."""
    from catalog.operations import requeue, stop
    from flows.mover import mover
    from flows.retrieval import retrieval

    local_source.put("in/late.bin", b"late" * 500)
    host, rule = acquisition_setup(rt.engine, local_source, directory="in", no_retrieval=True)
    site = tmp_path / "site"
    attach_local_site(rt.engine, site)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    with Session(rt.engine) as session:
        transfer_id = session.exec(select(DataTransfer.id)).one()
    with session_scope(rt.engine) as session:
        stop(session, transfer_id, by="operator")
    with session_scope(rt.engine) as session:
        requeue(session, transfer_id, by="operator")

    def state() -> tuple[str, list[str]]:
        with Session(rt.engine) as session:
            transfer = session.get(DataTransfer, transfer_id)
            rows = session.exec(
                select(TransferHistory.action)
                .where(TransferHistory.transfer_id == transfer_id)
                .order_by(col(TransferHistory.id))
            )
            return transfer.status, list(rows)

    mover(name="mover-test", stop_when_idle=True)
    status, actions = state()
    assert status == "Preset"  # waiting for its retrieval, not Failed
    assert actions[-3:] == ["claim", "await_retrieval", "request"]
    assert retrieval(name="retriever-test", stop_when_idle=True)["files"] == 1
    mover(name="mover-test", stop_when_idle=True)
    status, actions = state()
    assert status == "Done" and "fail" not in actions
    assert (site / "late.bin").read_bytes() == b"late" * 500
