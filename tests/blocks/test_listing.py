"""Directory listings page by page (`blocks.listing.iter_entries`), against a real server per protocol."""

from __future__ import annotations

import gc
import logging
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocks.listing import Entry, iter_entries
from blocks.registry import block_for
from catalog.store import DataStore
from tasks.delivery import Delivery
from tasks.transfer import send_data_file
from tests.blocks.test_contract import served_directory

MANY = 100_000
OBJECTS = 2_500  # more than two pages of 1,000
PEAK_LIMIT = 30 * 1024 * 1024


def delivery(store: DataStore, host, data: bytes, target: str) -> Delivery:
    stored = store.put_stream([data])
    block = block_for(host)
    return Delivery(1, stored.key, stored.size, stored.md5, block, block.join(host.directory, target))


def lists_without_details(host) -> bool:
    """Plain HTTP (no WebDAV) lists from the HTML index, which names entries but gives no sizes or times."""
    return host.protocol in ("http", "https") and host.options.get("webdav") is False


def by_name(entries: list[Entry]) -> dict[str, Entry]:
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), f"listed more than once: {sorted(n for n in names if names.count(n) > 1)}"
    return {e.name: e for e in entries}


def test_a_directory_lists_its_files_and_subdirectories(host, store):
    block = block_for(host)
    files = {"one.bin": b"1" * 10, "two.bin": b"2" * 2000, "three.bin": b""}
    for name, data in files.items():
        send_data_file(store, delivery(store, host, data, f"listing/{name}"))
    send_data_file(store, delivery(store, host, b"inner", "listing/sub/inner.bin"))
    fs = block.filesystem()
    directory = block.join(host.directory, "listing")

    listed = by_name(list(iter_entries(block, fs, directory)))

    assert sorted(listed) == ["one.bin", "sub", "three.bin", "two.bin"]
    # the same full paths fs.ls gives, so each can be handed back to fs
    assert {e.path for e in listed.values()} == {p.rstrip("/") for p in fs.ls(directory, detail=False)}
    assert fs.cat_file(listed["two.bin"].path) == files["two.bin"]
    now = datetime.now(UTC)
    for name, data in files.items():
        entry = listed[name]
        assert not entry.is_directory
        assert entry.path.rsplit("/", 1)[-1] == name
        if lists_without_details(host):
            assert entry.size is None and entry.modified is None
            continue
        assert entry.size == len(data)
        assert entry.modified is not None and entry.modified.utcoffset() is not None
        assert entry.modified.utcoffset().total_seconds() == 0
        assert abs((entry.modified - now).total_seconds()) < 300
    sub = listed["sub"]
    assert sub.is_directory and sub.size is None
    assert [e.name for e in iter_entries(block, fs, sub.path)] == ["inner.bin"]


def test_a_missing_directory_raises_file_not_found(host):
    block = block_for(host)
    fs = block.filesystem()
    entries = iter_entries(block, fs, block.join(host.directory, "no-such-directory"))
    with pytest.raises(FileNotFoundError):
        next(entries)


def test_an_empty_directory_lists_nothing(host, store):
    """Where directories exist, an empty one lists nothing. Object stores have no empty directories:
    an empty bucket lists nothing, and a prefix whose last object was deleted no longer exists."""
    block = block_for(host)
    fs = block.filesystem()
    if not block.has_directories:
        assert list(iter_entries(block, fs, block.join(host.directory))) == []  # a new, empty bucket
        d = delivery(store, host, b"x", "gone/only.bin")
        send_data_file(store, d)
        fs.rm(d.remote_path)
        with pytest.raises(FileNotFoundError):
            list(iter_entries(block, fs, block.join(host.directory, "gone")))
        return
    if lists_without_details(host):
        pytest.skip("without WebDAV there is no way to make an empty directory")
    empty = block.join(host.directory, "empty")
    fs.makedirs(empty, exist_ok=True)
    assert list(iter_entries(block, fs, empty)) == []


def make_empty_files(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    for i in range(count):
        os.close(os.open(directory / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))


# A guard against a hang, not a speed limit: CPU-bound under tracemalloc, the HTTP listings take 75-95 s
# on a shared two-core machine at load 7 and over 240 s at load 11-17 beside the other test workers.
@pytest.mark.timeout(600)
def test_a_directory_of_100000_files_is_streamed(host, request):
    """Every name comes back once, the first long before the last, with memory far below what the
    whole listing would take (fs.ls holds about 40 MB of dicts for it)."""
    directory = served_directory(host, request)
    if directory is None:
        pytest.skip(f"the {host.protocol} emulator keeps objects in memory: see the paged object-store test")
    if lists_without_details(host):
        pytest.skip("plain HTTP lists from the HTML index, which is read whole (fs.ls)")
    make_empty_files(directory / "many", MANY)
    if host.protocol == "ftp":
        # pyftpdlib is one Python process: beside the other test workers it once left a reply unsent
        # for the default 30 s. The listing's own pace is what this test checks, not the server's.
        host.options = {**host.options, "timeout": 120}
    block = block_for(host)
    fs = block.filesystem()
    path = block.join(host.directory, "many")
    seen = bytearray(MANY)
    others = 0

    gc.collect()
    tracemalloc.start()
    try:
        started = time.monotonic()
        first = None
        for entry in iter_entries(block, fs, path):
            if first is None:
                first = time.monotonic() - started
            if entry.name.startswith("f") and entry.name[1:].isdigit() and not entry.is_directory:
                seen[int(entry.name[1:])] += 1
            else:
                others += 1
        total = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    print(f"{host.name}: {MANY} entries in {total:.2f} s, first after {first:.3f} s, peak {peak / 2**20:.1f} MiB")
    assert others == 0
    assert seen.count(1) == MANY, f"{seen.count(0)} missing, {MANY - seen.count(0) - seen.count(1)} repeated"
    assert peak < PEAK_LIMIT
    assert first is not None and first < total / 4


# A guard against a hang: 11-17 s on a shared two-core machine at load 7, over 60 s at load 11-17
# beside the other test workers (the emulators are single processes filling 2,500 objects).
@pytest.mark.timeout(240)
def test_an_object_store_listing_follows_pages(host, caplog, monkeypatch):
    """2,500 objects (and one "subdirectory") over three pages of 1,000: each comes back once."""
    block = block_for(host)
    if block.has_directories:
        pytest.skip("for object stores; directories on disk are covered by the 100,000-file test")
    count, page_size = OBJECTS, 1000
    if host.protocol == "gcs":
        # The GCS emulator rewrites its whole index on every upload, so uploads slow down as the
        # bucket fills (2,500 take over a minute): 1,000 objects in pages of 300 here instead.
        count, page_size = 1_000, 300
    fs = block.filesystem()
    base = block.join(host.directory, "paged")
    names = [f"o{i:05d}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: fs.pipe_file(f"{base}/{name}", b"x"), [*names, "sub/inner"]))

    requests = count_listing_requests(host, fs, caplog, monkeypatch)
    listed = by_name(list(iter_entries(block, fs, base, page_size=page_size)))

    assert sorted(listed) == sorted([*names, "sub"])
    assert listed["sub"].is_directory
    assert all(listed[n].size == 1 and not listed[n].is_directory for n in names)
    assert requests() >= -(-(count + 1) // page_size)  # one request per page, none skipped


def count_listing_requests(host, fs, caplog, monkeypatch):
    """A function telling how many listing requests the server has been sent from now on."""
    if host.protocol == "s3":
        # Counted on the client's HTTP session, which both the lean listing and botocore send on.
        http = fs.s3._endpoint.http_session
        urls: list[str] = []
        send = http.send

        async def counted(request):
            urls.append(request.url)
            return await send(request)

        monkeypatch.setattr(http, "send", counted)
        return lambda: sum("list-type=2" in url for url in urls)
    if host.protocol == "azure":
        caplog.set_level(logging.INFO, logger="azure.core.pipeline.policies.http_logging_policy")
        caplog.clear()
        # query values are redacted in the log, but only List Blobs sends a delimiter
        return lambda: sum("Request URL" in r.getMessage() and "delimiter=" in r.getMessage() for r in caplog.records)
    # The GCS emulator ignores maxResults and answers every listing in one page; so that following
    # nextPageToken is exercised, its answers are cut into pages here as GCS itself would.
    pages: list[int] = []
    call = fs._call

    async def paged(method, path, *args, pageToken=None, **kwargs):
        out = await call(method, path, *args, **kwargs)
        size = kwargs.get("maxResults")
        if path != "b/{}/o" or not size or "nextPageToken" in out:
            return out
        rows = [("prefixes", p) for p in out.get("prefixes", [])] + [("items", i) for i in out.get("items", [])]
        start = int(pageToken or 0)
        page: dict = {"prefixes": [], "items": []}
        for key, row in rows[start : start + size]:
            page[key].append(row)
        if start + size < len(rows):
            page["nextPageToken"] = str(start + size)
        pages.append(start)
        return page

    fs._call = paged
    return lambda: len(pages)


def test_stopping_early_leaves_the_connection_usable(host, store):
    block = block_for(host)
    for name in ("a.bin", "b.bin", "c.bin"):
        send_data_file(store, delivery(store, host, b"x", f"early/{name}"))
    fs = block.filesystem()
    directory = block.join(host.directory, "early")
    entries = iter_entries(block, fs, directory)
    assert next(entries).name in {"a.bin", "b.bin", "c.bin"}
    entries.close()  # type: ignore[attr-defined]  # a generator, typed as an Iterator
    assert sorted(e.name for e in iter_entries(block, fs, directory)) == ["a.bin", "b.bin", "c.bin"]


def test_object_stores_narrow_a_listing_by_name_on_the_server(host, store):
    """A wildcard's literal start (`T2M_*.grib` → `T2M_`) is sent to object stores as the listing's
    prefix; the other protocols list everything and the caller's filter decides."""
    from blocks.listing import SERVER_SIDE_PREFIX, wildcard_prefix

    block = block_for(host)
    for name in ("T2M_0600.grib", "T2M_1200.grib", "RH_0600.grib"):
        send_data_file(store, delivery(store, host, b"g", f"narrow/{name}"))
    send_data_file(store, delivery(store, host, b"g", "narrow/T2M_sub/x.grib"))
    fs = block.filesystem()
    directory = block.join(host.directory, "narrow")
    prefix = wildcard_prefix("T2M_*.grib")
    assert prefix == "T2M_"

    names = sorted(e.name for e in iter_entries(block, fs, directory, name_prefix=prefix) if not e.is_directory)

    if host.protocol in SERVER_SIDE_PREFIX:
        assert names == ["T2M_0600.grib", "T2M_1200.grib"]
        # nothing starts with it: empty, not an error (the directory exists; the server cannot say more)
        assert list(iter_entries(block, fs, directory, name_prefix="ZZ")) == []
    else:
        assert names == ["RH_0600.grib", "T2M_0600.grib", "T2M_1200.grib"]


def test_wildcard_prefix():
    from blocks.listing import wildcard_prefix

    assert wildcard_prefix("*.grib") == ""
    assert wildcard_prefix("fc_2026?.nc") == "fc_2026"
    assert wildcard_prefix("obs[0-9].bufr") == "obs"
    assert wildcard_prefix("exact.bin") == "exact.bin"
    assert wildcard_prefix(None) == ""


def _sftp_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_sftp_version_3_name_packets_are_decoded_with_every_attribute():
    """The fields of a NAME answer (draft-ietf-secsh-filexfer-02, 7) come out whichever attributes the
    server sends, extended pairs skipped; a packet cut short is refused, not read past its end."""
    import struct

    from blocks.sftp_names import v3_names as _v3_names

    everything = (
        _sftp_string(b"caf\xc3\xa9.grib")
        + _sftp_string(b"-rw-r--r-- 1 u g 5 Jan 1 00:00 caf\xc3\xa9.grib")
        + (0x8000000F).to_bytes(4, "big")
        + (5).to_bytes(8, "big")  # size
        + (1000).to_bytes(4, "big")  # uid
        + (1000).to_bytes(4, "big")  # gid
        + (0o100644).to_bytes(4, "big")  # permissions
        + (1_700_000_000).to_bytes(4, "big")  # atime
        + (1_767_225_600).to_bytes(4, "big")  # mtime
        + (1).to_bytes(4, "big")
        + _sftp_string(b"vendor@example.com")
        + _sftp_string(b"data")
    )
    bare = _sftp_string(b"sub") + _sftp_string(b"") + (0x4).to_bytes(4, "big") + (0o40755).to_bytes(4, "big")
    payload = (2).to_bytes(4, "big") + everything + bare

    assert _v3_names(payload) == [("café.grib".encode(), 5, 0o100644, 1_767_225_600), (b"sub", None, 0o40755, None)]
    with pytest.raises(struct.error):
        _v3_names(payload[:-2])


def test_sftp_listing_without_the_lean_reader_gives_the_same_entries(sshd, monkeypatch):
    """Servers speaking another SFTP version are listed by asyncssh's own `scandir`: same entries."""

    import blocks.listing
    from tests.blocks.conftest import sftp_host, sshd_directory

    directory = sshd_directory(sshd)
    block = block_for(sftp_host(sshd, directory))
    directory.mkdir(parents=True)
    (directory / "a.bin").write_bytes(b"abc")
    (directory / "sub").mkdir()
    fs = block.filesystem()
    scandir = blocks.listing.sftp_scandir

    def not_for_openssh(channel, path):
        raise AssertionError("OpenSSH speaks SFTP version 3: its listings are read by sftp_v3_names")

    monkeypatch.setattr(blocks.listing, "sftp_scandir", not_for_openssh)
    lean = by_name(list(iter_entries(block, fs, str(directory))))
    monkeypatch.setattr(blocks.listing, "sftp_scandir", scandir)
    monkeypatch.setattr(blocks.listing, "lean_readdir_works", lambda channel: False)
    plain = by_name(list(iter_entries(block, fs, str(directory))))
    assert lean == plain
    assert lean["a.bin"].size == 3 and not lean["a.bin"].is_directory
    assert lean["sub"].is_directory and lean["sub"].size is None
