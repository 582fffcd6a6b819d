"""Key-ordered listing pages (what the portal's S3 ListObjects answers), on SQLite and PostgreSQL:
page after page, following each page's marker, gives exactly the sorted, folded view of every file,
in byte order whatever the database's collation, and a folded directory is skipped in one read."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from catalog.acquisition import RegisteredFile, register_files
from catalog.database import session_scope
from catalog.portal_keys import list_keys, successor
from catalog.statuses import TransferStatus
from tests.factories import destination, local_host

#: Registered files are Preset: list those as the visible ones here.
PRESET = frozenset({TransferStatus.PRESET})

TARGETS = (
    [f"run/{i:04}.grib" for i in range(0, 1200, 3)]
    + [f"run/deep/{i}.bin" for i in range(150)]
    + [f"big/{i:05}.nc" for i in range(1500)]
    # Byte order, not a language's: upper case before lower, '-' and '.' before '/' before digits.
    + ["Zulu.txt", "alpha.txt", "run-a.txt", "run.txt", "run0.txt", "runé.txt", "run/é/x", "top"]
)


def everything(targets, prefix, delimiter):
    """The whole listing, computed directly: sorted keys, those below the delimiter folded."""
    files, prefixes = [], []
    for key in sorted(set(targets)):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            files.append(key)
        elif not prefixes or prefixes[-1] != key[: cut + len(delimiter)]:
            prefixes.append(key[: cut + len(delimiter)])
    return files, prefixes


@pytest.fixture
def bucket(engine, tmp_path):
    destination(engine, "bucket", host=local_host("provider", str(tmp_path)))
    with session_scope(engine) as session:
        files = [RegisteredFile(path=f"/src/{t}", target=t, size=1) for t in TARGETS]
        register_files(
            session, destination="bucket", host="provider", source_root="/src", group="g", files=files, by="test"
        )
        # The same target again, newer and bigger: it stands for the target from now on.
        register_files(
            session,
            destination="bucket",
            host="provider",
            source_root="/src",
            group="g",
            files=[RegisteredFile(path="/src/again", target="run/0003.grib", size=7)],
            by="test",
        )
    return engine


@pytest.mark.parametrize(
    ("prefix", "delimiter", "limit"),
    [("", "", 97), ("", "/", 2), ("run/", "/", 50), ("run", "", 100), ("big/", "", 1000), ("nothing/", "/", 10)],
)
def test_pages_followed_by_marker_give_the_whole_listing_once(bucket, prefix, delimiter, limit):
    files, prefixes, after, pages = [], [], "", 0
    sizes = {}
    while True:
        with session_scope(bucket) as session:
            page = list_keys(session, "bucket", PRESET, prefix=prefix, delimiter=delimiter, after=after, limit=limit)
        pages += 1
        assert len(page.files) + len(page.prefixes) <= limit
        files += [key for key, _ in page.files]
        sizes |= {key: entry.size for key, entry in page.files}
        prefixes += page.prefixes
        if not page.truncated:
            break
        assert page.next_marker > after
        after = page.next_marker
    want_files, want_prefixes = everything(TARGETS, prefix, delimiter)
    assert (files, prefixes) == (want_files, want_prefixes)
    assert pages == max(1, -(-(len(want_files) + len(want_prefixes)) // limit))
    if "run/0003.grib" in sizes:
        assert sizes["run/0003.grib"] == 7  # the newest registration of the target


def test_a_marker_inside_a_folded_directory_skips_the_rest_of_it(bucket):
    with session_scope(bucket) as session:
        page = list_keys(session, "bucket", PRESET, prefix="run/", delimiter="/", after="run/deep/5.bin", limit=1000)
    assert page.prefixes == ["run/é/"] and page.files == []


def test_a_folded_directory_of_1500_files_is_skipped_in_one_read(bucket):
    statements = []
    sa.event.listen(bucket, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with session_scope(bucket) as session:
        page = list_keys(session, "bucket", PRESET, delimiter="/", limit=1000)
    assert page.prefixes == ["big/", "run/"]
    assert [key for key, _ in page.files] == [
        "Zulu.txt",
        "alpha.txt",
        "run-a.txt",
        "run.txt",
        "run0.txt",
        "runé.txt",
        "top",
    ]
    reads = [s for s in statements if "FROM data_transfer" in s]
    assert len(reads) <= 5  # not one per file of big/ (1,500) nor per page of them


def test_successor_bounds_every_string_with_the_prefix():
    assert successor("run/") == "run0"
    assert successor("a\U0010ffff") == "b"
    for key in ("run/", "run/x", "run/\U0010ffff\U0010ffff"):
        assert "run/" <= key < successor("run/")
