from __future__ import annotations

import pytest

from catalog.data_users import DataUserSpec, create_data_user, grant
from catalog.database import session_scope
from catalog.events import EventLog
from catalog.models import Destination, DestinationHost, Host
from catalog.portal import Portal

PASSWORD = "pw-alice-1"


@pytest.fixture
def event_log_path(tmp_path):
    return tmp_path / "events.log"


@pytest.fixture
def portal(sqlite_engine, store, event_log_path):
    events = EventLog.open(event_log_path)
    yield Portal(sqlite_engine, store, events, temporary_patterns=[".*", "*.tmp"], server_name="test-portal")
    events.close()


@pytest.fixture
def world(sqlite_engine, tmp_path):
    """Destinations `bucket` (no host: pulled), `site` (a file host), `other` (not alice's); users alice, bob."""
    with session_scope(sqlite_engine) as session:
        for name in ("bucket", "site", "other"):
            session.add(Destination(name=name))
        session.add(Host(name="h-site", protocol="file", address=str(tmp_path / "remote")))
        session.flush()
        session.add(DestinationHost(destination_name="site", host_name="h-site", kind="dissemination"))
        create_data_user(session, DataUserSpec("alice", PASSWORD, description="Alice's lab", country_code="uk"))
        create_data_user(session, DataUserSpec("bob", "pw-bob-1"))
        grant(session, "alice", "all", destination="bucket")
        grant(session, "alice", "get,put,dir,size,mtime,rename", destination="site")
        grant(session, "bob", "get,dir,size,mtime", destination="bucket")
        grant(session, "bob", "all", destination="other")
    return sqlite_engine
