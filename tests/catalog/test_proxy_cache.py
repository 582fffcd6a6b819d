"""The proxy cache's copy of an asset whose upstream changed goes with the commit of the change,
whichever writer made it, and only then."""

from __future__ import annotations

import pytest

from catalog.database import session_scope
from catalog.proxy import delete_stale_copies_on_commit, get_asset, register_asset

OLD, NEW = "https://upstream.example/a-v1.tif", "https://upstream.example/a-v2.tif"


def test_a_changed_upstream_deletes_the_cached_copy_once_committed_and_never_on_rollback(engine, tmp_path):
    cache = tmp_path / "cache"
    delete_stale_copies_on_commit(engine, cache)
    copy = cache / "s2" / "item1" / "a"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"bytes of v1")
    with session_scope(engine) as session:
        row = register_asset(session, "s2", "item1", "a", OLD, size=11)
        row.cache_file, row.cached_size, row.etag = "s2/item1/a", 11, '"v1"'

    with pytest.raises(RuntimeError), session_scope(engine) as session:
        register_asset(session, "s2", "item1", "a", NEW, size=11)
        session.flush()
        raise RuntimeError("the writer failed after the change")
    assert copy.exists(), "a change rolled back keeps the copy of the upstream the asset still names"
    with session_scope(engine) as session:
        assert get_asset(session, "s2", "item1", "a").upstream_href == OLD

    with session_scope(engine) as session:
        register_asset(session, "s2", "item1", "a", NEW, size=11)
        session.flush()
        assert copy.exists(), "a proxy may serve the old copy until the change is committed"
    assert not copy.exists()
    with session_scope(engine) as session:
        asset = get_asset(session, "s2", "item1", "a")
        assert asset.upstream_href == NEW and asset.cache_file is None

    # Registering the same upstream again changes nothing: a copy of it is kept.
    copy.write_bytes(b"bytes of v2")
    with session_scope(engine) as session:
        row = register_asset(session, "s2", "item1", "a", NEW, size=11)
        row.cache_file, row.cached_size, row.etag = "s2/item1/a", 11, '"v2"'
    with session_scope(engine) as session:
        register_asset(session, "s2", "item1", "a", NEW, size=11)
    assert copy.read_bytes() == b"bytes of v2"
