"""Discovery on real SFTP, FTP, S3 and HTTP (nginx index) servers: one pass registers a large source
(10,000 files) once, a second pass registers nothing, a changed file is registered again, date
templates pick yesterday's directory."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, func, select

from catalog.acquisition import SourceFile, render_dates
from catalog.errors import InvalidInput
from catalog.models import DataFile, DataTransfer, TransferHistory
from tasks.discovery import discover_rule
from tests.acquisition.conftest import acquisition_setup


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def transfers(engine):
    with Session(engine) as session:
        return list(session.exec(select(DataTransfer).order_by(col(DataTransfer.id))))


@pytest.mark.parametrize("source", ["sftp", "ftp", "http"], indirect=True)  # S3: the next test
def test_a_large_source_is_registered_in_one_pass_and_a_second_pass_registers_none(rt, source):
    # 10,000 files written straight into the server's directory.
    n = 10_000
    source.fill("incoming", n)
    source.put("incoming/README.txt", b"not data")
    host, rule = acquisition_setup(rt.engine, source, directory="incoming", pattern=r"\.dat$")

    first = discover_rule(rt.engine, host, rule, by="test")
    assert (first.listed, first.registered) == (n + 1, n)
    assert count(rt.engine, DataTransfer, DataTransfer.status == "Preset") == n
    # Registered without content: nothing in the store yet, the source says where it is.
    assert count(rt.engine, DataFile, col(DataFile.store_key).is_(None)) == n
    assert count(rt.engine, SourceFile, SourceFile.host_name == host.name) == n
    assert count(rt.engine, TransferHistory, TransferHistory.to_status == "Preset") == n
    sample = transfers(rt.engine)[0]
    assert sample.target.startswith("f") and sample.target.endswith(".dat")

    second = discover_rule(rt.engine, host, rule, by="test")
    assert (second.listed, second.registered) == (n + 1, 0)
    assert count(rt.engine, DataTransfer) == n


@pytest.fixture(scope="module")
def large_bucket(s3_server):
    """10,000 empty objects in one bucket of the moto S3 server, put once for the module and shared by
    the SQLite and PostgreSQL runs (32 PUTs at a time; moto takes no bulk upload): about a minute on a
    loaded two-core machine, the price of ten real listing pages."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    bucket, count = f"large-{uuid.uuid4().hex[:12]}", 10_000
    s3_server.create_bucket(bucket)
    client = s3_server.client(connections=32)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"incoming/f{i:05d}.dat", Body=b""), range(count)))
    return bucket, count


def test_ten_thousand_s3_objects_are_registered_in_one_pass_and_a_second_pass_registers_none(
    rt, s3_server, large_bucket
):
    from catalog.models import HostCreate, HostKind
    from tests.acquisition.conftest import Source

    bucket, n = large_bucket
    host_spec = HostCreate(
        name="provider-s3-large",
        kind=HostKind.ACQUISITION,
        protocol="s3",
        address=s3_server.endpoint_url,
        login=s3_server.access_key,
        password=s3_server.secret_key,
        directory=bucket,
        options={"region": s3_server.region},
    )
    host, rule = acquisition_setup(rt.engine, Source(host_spec, None), directory="incoming")
    first = discover_rule(rt.engine, host, rule, by="test")
    assert (first.listed, first.registered) == (n, n)  # ten listing pages of 1,000 keys
    assert count(rt.engine, DataTransfer, DataTransfer.status == "Preset") == n
    second = discover_rule(rt.engine, host, rule, by="test")
    assert (second.listed, second.registered) == (n, 0)


def test_a_wildcard_registers_its_matches_only_on_every_server(rt, source):
    """On S3 the wildcard's literal start is the listing's prefix, so the server sends candidates only."""
    for name in ("T2M_0600.grib", "T2M_1200.grib", "T2M_1200.grib.md5", "RH_0600.grib"):
        source.put(f"w/{name}", b"g")
    host, rule = acquisition_setup(rt.engine, source, directory="w", wildcard="T2M_*.grib")
    outcome = discover_rule(rt.engine, host, rule, by="test")
    assert outcome.registered == 2
    assert sorted(t.target for t in transfers(rt.engine)) == ["T2M_0600.grib", "T2M_1200.grib"]
    # what crossed the network: on S3 only the three names starting with T2M_
    assert outcome.listed == (3 if source.host.protocol == "s3" else 4)


def test_a_file_whose_size_changed_is_registered_again(rt, source):
    source.put("a/one.dat", b"1" * 10)
    source.put("a/two.dat", b"2" * 10)
    host, rule = acquisition_setup(rt.engine, source, directory="a")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 2
    source.put("a/one.dat", b"1" * 25)
    again = discover_rule(rt.engine, host, rule, by="test")
    assert again.registered == 1
    registered = [(t.target, t.status) for t in transfers(rt.engine)]
    # the first one.dat was still waiting to be fetched: it is stopped, so only the new content is fetched
    assert sorted(registered) == [("one.dat", "Preset"), ("one.dat", "Stopped"), ("two.dat", "Preset")]
    stopped = next(t for t in transfers(rt.engine) if t.status == "Stopped")
    with Session(rt.engine) as session:
        last = session.exec(
            select(TransferHistory).where(TransferHistory.transfer_id == stopped.id).order_by(col(TransferHistory.id))
        ).all()[-1]
    assert (last.action, last.to_status, last.reason) == (
        "stop",
        "Stopped",
        "one.dat changed at the source and was registered again",
    )
    with Session(rt.engine) as session:
        newest = session.exec(select(DataFile).order_by(col(DataFile.id).desc())).first()
    assert newest is not None and newest.name == "one.dat" and newest.size == 25
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0


def test_without_requeue_on_update_a_changed_file_is_left_alone(rt, local_source):
    local_source.put("one.dat", b"1")
    host, rule = acquisition_setup(rt.engine, local_source, requeue_on_update=False)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    local_source.put("one.dat", b"12345")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0


def test_date_templates_pick_yesterdays_directory(rt, source):
    now = datetime.now(UTC)
    yesterday, today = (now - timedelta(days=1)).strftime("%Y%m%d"), now.strftime("%Y%m%d")
    source.put(f"{yesterday}/old.dat", b"y")
    source.put(f"{today}/new.dat", b"t")
    host, rule = acquisition_setup(rt.engine, source, directory="$date{%Y%m%d,-1d}")
    outcome = discover_rule(rt.engine, host, rule, by="test")
    assert outcome.registered == 1
    assert [t.target for t in transfers(rt.engine)] == ["old.dat"]
    with Session(rt.engine) as session:
        (path,) = session.exec(select(SourceFile.path)).all()
    assert yesterday in path


def test_filters_by_name_size_age_and_depth(rt, local_source):
    old = time.time() - 7200
    local_source.put("keep.grib", b"x" * 100, mtime=old)
    local_source.put("small.grib", b"x", mtime=old)
    local_source.put("big.grib", b"x" * 5000, mtime=old)
    local_source.put("fresh.grib", b"x" * 100)  # still being written, by its age
    local_source.put("other.txt", b"x" * 100, mtime=old)
    local_source.put("d1/deep.grib", b"x" * 100, mtime=old)
    local_source.put("d1/d2/deeper.grib", b"x" * 100, mtime=old)
    host, rule = acquisition_setup(
        rt.engine,
        local_source,
        pattern=r"\.grib$",
        min_size=10,
        max_size=1000,
        min_age_seconds=600,
        max_depth=1,
        target_prefix="in",
    )
    outcome = discover_rule(rt.engine, host, rule, by="test")
    assert sorted(t.target for t in transfers(rt.engine)) == ["in/d1/deep.grib", "in/keep.grib"]
    assert outcome.registered == 2


def test_wildcard_and_dedupe_by_time(rt, local_source):
    local_source.put("a.bufr", b"1", mtime=1_700_000_000)
    local_source.put("a.grib", b"1", mtime=1_700_000_000)
    host, rule = acquisition_setup(rt.engine, local_source, wildcard="*.bufr", dedupe_by_time=True)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    local_source.put("a.bufr", b"1", mtime=1_700_000_600)  # same size, another time: another file
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0


def test_no_retrieval_registers_the_metadata_only(rt, local_source):
    local_source.put("lazy.nc", b"z" * 42)
    host, rule = acquisition_setup(rt.engine, local_source, no_retrieval=True)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    with Session(rt.engine) as session:
        source_file = session.exec(select(SourceFile)).one()
        data_file = session.get(DataFile, source_file.data_file_id)
    assert source_file.on_demand and data_file is not None
    assert data_file.store_key is None and data_file.size == 42


def test_date_template_deltas_and_errors():
    now = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    assert render_dates("data/$date{%Y%m%d,-1d}/x", now) == "data/20260228/x"
    assert render_dates("$date{%Y%m%d%H,+6h}", now) == "2026030112"
    assert render_dates("$date", now) == "20260301"
    assert render_dates("$date{%H%M,-30m}", now) == "0600"
    with pytest.raises(InvalidInput, match="bad date delta"):
        render_dates("$date{%Y,yesterday}", now)


def test_discovered_files_go_to_the_destinations_aliases_too(rt, local_source):
    """As a push: each alias that applies gets its own transfer (target rewritten, its priority); the
    file is fetched once, and the alias's delay counts from the moment it is whole in the store."""
    from catalog.config import add_alias, create_destination
    from catalog.database import session_scope
    from catalog.models import DestinationCreate
    from catalog.retrieval import claim_fetches
    from tasks.retrieval import retrieve

    local_source.put("in/fc_0600.grib", b"g" * 10)
    local_source.put("in/obs.bufr", b"b" * 10)
    host, rule = acquisition_setup(rt.engine, local_source, directory="in")
    with session_scope(rt.engine) as session:
        create_destination(session, DestinationCreate(name="mirror"))
        create_destination(session, DestinationCreate(name="backup"))
        add_alias(
            session, "acq", "mirror", pattern=r"^fc_(.*)$", replacement=r"forecasts/\1", priority=5, delay_seconds=600
        )
        add_alias(session, "acq", "backup")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 2
    rows = sorted((t.destination_name, t.target, t.priority, t.status) for t in transfers(rt.engine))
    assert rows == [
        ("acq", "fc_0600.grib", 99, "Preset"),
        ("acq", "obs.bufr", 99, "Preset"),
        ("backup", "fc_0600.grib", 99, "Preset"),
        ("backup", "obs.bufr", 99, "Preset"),
        ("mirror", "forecasts/0600.grib", 5, "Preset"),
    ]
    with session_scope(rt.engine) as session:
        fetches = claim_fetches(session, "r", 100, default_per_host=100)
    assert len(fetches) == 2  # one fetch per data file, whatever the number of its transfers
    assert all(retrieve(f, "r") for f in fetches)
    by_destination = {(t.destination_name, t.target): t for t in transfers(rt.engine)}
    assert {t.status for t in by_destination.values()} == {"Queued"}
    own, mirror = by_destination[("acq", "fc_0600.grib")], by_destination[("mirror", "forecasts/0600.grib")]
    assert timedelta(seconds=590) < mirror.scheduled_at - own.scheduled_at < timedelta(seconds=610)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0
