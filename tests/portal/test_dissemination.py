"""A file pushed through the portal (SFTP here) is disseminated by a real mover to the destination's host
and announced on a real MQTT broker, like any other push."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from catalog.data_users import DataUserSpec, create_data_user, grant
from catalog.database import session_scope
from catalog.events import EventLog
from catalog.portal import Portal
from tasks import reporting
from tests.factories import destination, local_host
from tests.flows.conftest import rt  # noqa: F401 — the runtime fixture (SQLite and PostgreSQL)
from tests.flows.test_mover import public
from tests.portal.conftest import SftpPortal
from tests.tasks.test_notify import Subscriber

RCLONE = str(Path(sys.executable).with_name("rclone"))


def test_a_file_pushed_over_sftp_reaches_the_site_and_is_announced(rt, tmp_path, mosquitto, monkeypatch):  # noqa: F811
    monkeypatch.setattr(rt.settings, "mqtt_url", mosquitto.url)
    reporting.publisher.cache_clear()
    remote = tmp_path / "site"
    # A topic of its own: the broker keeps the retained messages of earlier runs (SQLite, PostgreSQL).
    run = uuid.uuid4().hex[:8]
    topic = f"pds/{run}/$destination/$name"
    destination(rt.engine, "disseminated", host=local_host("dh", str(remote)), mqtt_topic=topic)
    with session_scope(rt.engine) as session:
        create_data_user(session, DataUserSpec("provider", "provider-pw-1"))
        grant(session, "provider", "put,mkdir,dir,get", destination="disseminated")  # rclone makes parents
    events = EventLog.open(tmp_path / "portal-events.log")
    server = SftpPortal(Portal(rt.engine, rt.store, events), tmp_path / "host_key").start()
    subscriber = Subscriber(mosquitto.url, f"pds/{run}/disseminated/#")
    try:
        source = tmp_path / "today.grib"
        source.write_bytes(os.urandom(3 * 1024 * 1024))
        obscured = subprocess.run([RCLONE, "obscure", "provider-pw-1"], capture_output=True, text=True).stdout.strip()
        up = subprocess.run(
            [RCLONE, "copyto", "--sftp-host", "127.0.0.1", "--sftp-port", str(server.port), "--sftp-user", "provider",
             "--sftp-pass", obscured, "--sftp-shell-type", "none", str(source), ":sftp:/disseminated/grib/today.grib"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ) | {"RCLONE_CONFIG": os.devnull},
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        from flows.mover import mover

        mover(name="portal-mover", stop_when_idle=True)
        delivered = remote / "grib" / "today.grib"
        assert hashlib.md5(delivered.read_bytes()).hexdigest() == hashlib.md5(source.read_bytes()).hexdigest()
        message = subscriber.receive(timeout=10)
        assert message.topic == f"pds/{run}/disseminated/today.grib"
        body = json.loads(message.payload)
        assert body["md5"] == hashlib.md5(source.read_bytes()).hexdigest()
        assert public(rt, body["transfer_id"]).status == "Done"
        inh = (tmp_path / "portal-events.log").read_text()
        assert inh.startswith("INH;") and "TransferProtocol=sftp" in inh and "Action=upload" in inh
    finally:
        subscriber.close()
        server.stop()
        events.close()
