"""The virtual tree every portal protocol shares: reach, permissions, uploads, downloads, renames, quotas."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlmodel import select

from catalog.data_users import (
    create_policy,
    grant,
    issue_s3_secret,
    reachable_destinations,
    s3_secret,
    update_data_user,
)
from catalog.database import session_scope
from catalog.errors import AccessDenied, Conflict, InvalidInput, NotFound, QuotaExceeded
from catalog.events import parse_line
from catalog.models import DataTransfer, Destination, DestinationAlias
from catalog.portal import parse_path


def upload(portal, user, path, data, protocol="https"):
    up = portal.begin_upload(user, path, protocol=protocol, client_address="127.0.0.1")
    for i in range(0, len(data), 100_000):
        up.write(data[i : i + 100_000])
    return up.commit()


def download(portal, user, path, **kw):
    return b"".join(portal.open_read(user, path, protocol="https", **kw).chunks())


def transfers(engine, destination):
    with session_scope(engine) as session:
        rows = session.exec(select(DataTransfer).where(DataTransfer.destination_name == destination)).all()
        return [(t.target, t.status) for t in rows]


@pytest.mark.parametrize(
    ("path", "destination", "target"),
    [
        ("/", None, ""),
        ("/bucket", "bucket", ""),
        ("/bucket/a/b.bin", "bucket", "a/b.bin"),
        ("bucket//a/./b.bin", "bucket", "a/b.bin"),
        ("/bucket/../../../etc/passwd", "etc", "passwd"),
        ("/bucket/a/../../other/x", "other", "x"),
        ("/../..", None, ""),
    ],
)
def test_paths_resolve_inside_the_tree_and_never_above_its_root(path, destination, target):
    parsed = parse_path(path)
    assert (parsed.destination, parsed.target) == (destination, target)


@pytest.mark.parametrize("path", ["/bucket/a\\..\\b", "/bucket/a\x00b", "/bucket/a\nb"])
def test_control_characters_and_backslashes_are_refused(path):
    with pytest.raises(InvalidInput):
        parse_path(path)


def test_a_user_sees_only_its_destinations(portal, world):
    alice, bob = portal.user("alice"), portal.user("bob")
    assert [e.name for e in portal.list(alice, "/")] == ["bucket", "site"]
    assert [e.name for e in portal.list(bob, "/")] == ["bucket", "other"]
    for path in ("/other", "/other/x", "/bucket/../other/x", "/nosuch/x"):
        with pytest.raises(NotFound):
            portal.stat(alice, path)
    with pytest.raises(NotFound):
        portal.begin_upload(alice, "/bucket/../other/x", protocol="https")


def test_an_upload_to_a_bucket_waits_and_a_download_marks_it_done(portal, world, event_log_path):
    alice, bob = portal.user("alice"), portal.user("bob")
    data = os.urandom(1_000_003)
    stored, queued = upload(portal, alice, "/bucket/2026/run1/f.grib", data)
    assert stored.md5 == hashlib.md5(data).hexdigest()
    assert [(t.destination_name, t.status) for t in queued] == [("bucket", "Queued")]
    assert [(e.name, e.is_dir) for e in portal.list(bob, "/bucket")] == [("2026", True)]
    [entry] = portal.list(bob, "/bucket/2026/run1")
    assert (entry.name, entry.size, entry.md5) == ("f.grib", len(data), stored.md5)
    assert portal.stat(bob, "/bucket/2026").is_dir
    # A range read does not complete the transfer; the whole file does.
    assert download(portal, bob, "/bucket/2026/run1/f.grib", start=10, length=5) == data[10:15]
    assert transfers(world, "bucket") == [("2026/run1/f.grib", "Queued")]
    assert download(portal, bob, "/bucket/2026/run1/f.grib") == data
    assert transfers(world, "bucket") == [("2026/run1/f.grib", "Done")]
    lines = [parse_line(line) for line in event_log_path.read_text().splitlines()]
    assert [cat for cat, _ in lines] == ["INH", "INH", "INH"]
    first, last = dict(lines[0][1]), dict(lines[-1][1])
    assert (first["Action"], first["UserId"], first["TransferProtocol"], first["BytesSent"]) == (
        "upload",
        "alice",
        "https",
        str(len(data)),
    )
    assert (first["CountryCode"], first["UserDescription"], first["HostAddress"]) == ("uk", "Alice's lab", "127.0.0.1")
    assert (last["Action"], last["UserId"], last["FileName"], last["DestinationName"]) == (
        "download",
        "bob",
        "2026/run1/f.grib",
        "bucket",
    )


def test_a_user_without_put_cannot_upload_and_nothing_is_registered(portal, world):
    bob = portal.user("bob")
    with pytest.raises(AccessDenied, match="may not put"):
        portal.begin_upload(bob, "/bucket/x.bin", protocol="sftp")
    assert transfers(world, "bucket") == []


def test_an_upload_to_a_disseminated_destination_queues_its_aliases(portal, world):
    with session_scope(world) as session:
        session.add(DestinationAlias(destination_name="site", alias_name="other", pattern=r"\.grib$"))
    alice = portal.user("alice")
    _, queued = upload(portal, alice, "/site/a.grib", b"grib")
    assert sorted((t.destination_name, t.status) for t in queued) == [("other", "Queued"), ("site", "Queued")]


def test_a_temporary_name_is_held_until_renamed(portal, world):
    alice = portal.user("alice")
    _, queued = upload(portal, alice, "/site/dir/.f.bin", b"x" * 10)
    assert [t.status for t in queued] == ["StandBy"]
    upload(portal, alice, "/site/g.bin.tmp", b"y")
    portal.rename(alice, "/site/dir/.f.bin", "/site/dir/f.bin")
    assert sorted(transfers(world, "site")) == [("dir/f.bin", "Queued"), ("g.bin.tmp", "StandBy")]
    with pytest.raises(InvalidInput, match="within its destination"):
        portal.rename(alice, "/site/g.bin.tmp", "/bucket/g.bin")


def test_delete_and_directories(portal, world):
    alice, bob = portal.user("alice"), portal.user("bob")
    upload(portal, alice, "/bucket/d/f.bin", b"1")
    portal.mkdir(alice, "/bucket/empty/sub")
    assert portal.stat(alice, "/bucket/empty").is_dir
    assert [e.name for e in portal.list(alice, "/bucket")] == ["d", "empty"]
    with pytest.raises(Conflict, match="not empty"):
        portal.rmdir(alice, "/bucket/d")
    with pytest.raises(AccessDenied, match="may not delete"):
        portal.delete(bob, "/bucket/d/f.bin")
    portal.delete(alice, "/bucket/d/f.bin")
    assert transfers(world, "bucket") == [("d/f.bin", "Stopped")]
    with pytest.raises(NotFound):
        portal.stat(alice, "/bucket/d/f.bin")
    portal.rmdir(alice, "/bucket/empty/sub")
    with pytest.raises(NotFound):
        portal.rmdir(alice, "/bucket/empty")


def test_policies_group_destinations(portal, world):
    with session_scope(world) as session:
        create_policy(session, "everything", ["bucket", "site", "other"])
        grant(session, "bob", "dir", policy="everything")
        reach = reachable_destinations(session, "bob")
    assert sorted(reach) == ["bucket", "other", "site"]
    assert {o.value for o in reach["site"]} == {"dir"}
    assert "get" in {o.value for o in reach["bucket"]}


def test_quotas_stop_uploads_and_downloads(portal, world):
    with session_scope(world) as session:
        update_data_user(session, "alice", {"upload_quota_bytes": 1500, "download_quota_bytes": 1000})
    alice = portal.user("alice")
    upload(portal, alice, "/bucket/a.bin", b"a" * 1000)
    with pytest.raises(QuotaExceeded, match="upload quota"):
        upload(portal, alice, "/bucket/b.bin", b"b" * 1000)
    assert sorted(transfers(world, "bucket")) == [("a.bin", "Queued"), ("b.bin", "Failed")]
    assert download(portal, alice, "/bucket/a.bin") == b"a" * 1000
    with pytest.raises(QuotaExceeded, match="download quota"):
        portal.open_read(alice, "/bucket/a.bin", protocol="https")


def test_connection_limit(portal, world):
    with session_scope(world) as session:
        update_data_user(session, "alice", {"max_connections": 1})
    limit = portal.max_connections("alice")
    with (
        portal.connections.hold("alice", limit),
        pytest.raises(QuotaExceeded, match="1 connection"),
        portal.connections.hold("alice", limit),
    ):
        pass
    with portal.connections.hold("alice", limit):
        pass


def test_s3_secrets_are_kept_encrypted(world):
    with session_scope(world) as session:
        secret = issue_s3_secret(session, "alice", "server-key")
        assert s3_secret(session, "alice", "server-key") == secret
        assert s3_secret(session, "alice", "another-key") is None
        from catalog.portal_models import PortalAccount

        assert secret not in (session.get(PortalAccount, "alice").s3_secret or "")


def test_admins_reach_every_destination(portal, world):
    from catalog.users import ensure_user

    with session_scope(world) as session:
        ensure_user(session, "root", "pw", is_admin=True)
        session.add(Destination(name="late"))
    assert [e.name for e in portal.list(portal.user("root"), "/")] == ["bucket", "late", "other", "site"]


def test_no_older_version_shows_again_after_a_delete_or_a_rename(portal, world):
    alice = portal.user("alice")
    for content in (b"v1", b"v2"):
        upload(portal, alice, "/bucket/v.bin", content)
    portal.delete(alice, "/bucket/v.bin")
    with pytest.raises(NotFound):
        portal.stat(alice, "/bucket/v.bin")
    assert portal.list(alice, "/bucket") == []
    assert transfers(world, "bucket") == [("v.bin", "Stopped"), ("v.bin", "Stopped")]
    with pytest.raises(NotFound):
        portal.delete(alice, "/bucket/v.bin")

    # A rename replaces every version under the new name, and takes the old name away whole.
    for name, content in (("a.bin", b"a1"), ("a.bin", b"a2"), ("b.bin", b"b1"), ("b.bin", b"b2")):
        upload(portal, alice, f"/bucket/{name}", content)
    portal.rename(alice, "/bucket/b.bin", "/bucket/a.bin")
    assert [e.name for e in portal.list(alice, "/bucket")] == ["a.bin"]
    assert portal.stat(alice, "/bucket/a.bin").size == 2
    assert download(portal, alice, "/bucket/a.bin") == b"b2"
    portal.rename(alice, "/bucket/a.bin", "/bucket/a.bin")  # onto itself: nothing changes
    assert [e.name for e in portal.list(alice, "/bucket")] == ["a.bin"]
