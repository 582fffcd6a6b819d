"""Every delivery accounted for: a mover SIGKILLed again and again while it sends 200 files still leaves
exactly one UPH line and one MQTT notification (by message id) per Done transfer, and an ERR line for
every attempt a kill interrupted.

The UPH line and the notification are outbox rows committed with the Done status; a kill between that
commit and their copy to the log and the broker leaves them pending, and the restarted mover copies
them out. A subscriber connected from the start counts what the broker delivered."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import sqlalchemy as sa

from catalog.database import make_engine
from catalog.events import parse_line
from tests.servers._common import wait_until
from tests.test_embedded import SiteWatcher

FILES = 200
SIZE = 128 * 1024
KILLS = 5


class CountingSubscriber:
    """Subscribes at QoS 1 before anything is published and keeps every message's id."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.ids: list[str] = []
        self.mismatched: list[str] = []  # a payload id different from the message-id user property
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        properties = dict(getattr(message.properties, "UserProperty", []) or [])
        with self._lock:
            self.ids.append(body["id"])
            if properties.get("message-id") != body["id"]:
                self.mismatched.append(body["id"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def outbox_rows(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar() or 0)


def test_five_kills_during_200_transfers_leave_one_uph_line_and_one_notification_per_done(
    processes, mosquitto, tmp_path
):
    stack = processes
    client = stack.client
    remote = tmp_path / "site"
    client.create_destination("counted", max_parallel_transfers=8, mqtt_topic="pds/$destination/$name")
    # Throttled so that the kills land while files are moving.
    client.create_host("counted-disk", "file", address=str(remote), options={"max_rate": 1_000_000})
    client.attach_host("counted", "counted-disk")
    subscriber = CountingSubscriber(mosquitto.url, "pds/counted/#")
    files = {f"c{i:03}.bin": os.urandom(SIZE) for i in range(FILES)}
    watcher = SiteWatcher(remote, {name: len(data) for name, data in files.items()})
    mover_env = {"PDS_MQTT_URL": mosquitto.url, "PDS_MOVER_PARALLEL": "4"}
    engine = make_engine(f"sqlite:///{stack.root / 'data' / 'pds.db'}")
    mover = stack.start_mover("mover-k", **mover_env)
    try:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            client.push(tmp_path / name, "counted", name)

        def count(status: str) -> int:
            return len(client.transfers(destination="counted", status=status, limit=1000))

        kills, randomly = 0, random.Random(7)
        while kills < KILLS:
            done_before = count("Done")
            wait_until(
                lambda before=done_before: count("Done") >= before + 10 and count("Transferring") > 0,
                180,
                f"the mover to deliver again before kill {kills + 1}",
                log=stack.log("mover-k"),
            )
            time.sleep(randomly.uniform(0, 0.5))  # anywhere in a batch: mid-file, mid-commit, mid-publish
            os.kill(mover.pid, signal.SIGKILL)
            mover.wait(10)
            kills += 1
            assert count("Done") < FILES, f"everything was done by kill {kills}: the test proves nothing"
            mover = stack.start_mover("mover-k", **mover_env)
        wait_until(lambda: count("Done") == FILES, 300, "every transfer Done", log=stack.log("mover-k"))
        wait_until(lambda: outbox_rows(engine) == 0, 60, "the outbox to be empty", log=stack.log("mover-k"))
        wait_until(lambda: len(set(subscriber.ids)) >= FILES, 30, "every notification")
        time.sleep(1)  # a late duplicate would arrive now
    finally:
        watcher.stop()
        subscriber.close()
        engine.dispose()

    lines = [parse_line(line) for line in (stack.root / "data" / "logs" / "events.log").read_text().splitlines()]
    uph = Counter(dict(pairs)["DataTransferId"] for category, pairs in lines if category == "UPH")
    interrupted_err = [
        dict(pairs)
        for category, pairs in lines
        if category == "ERR" and "stopped during the transfer" in dict(pairs)["Message"]
    ]
    transfers = [client.transfer(t["id"]) for t in client.transfers(destination="counted", limit=1000)]
    done = {str(t["id"]) for t in transfers if t["status"] == "Done"}
    assert len(done) == FILES
    assert set(uph) == done and sum(uph.values()) == FILES, [t for t, n in uph.items() if n > 1]
    assert len(set(subscriber.ids)) == FILES, "one notification per Done transfer"
    assert not subscriber.mismatched
    interruptions = sum(h["to_status"] == "Interrupted" for t in transfers for h in t["history"])
    assert interruptions > 0, "no kill interrupted a transfer: the test proves nothing"
    assert len(interrupted_err) == interruptions, "an ERR line for every interrupted attempt"
    for name, data in files.items():
        assert (remote / name).read_bytes() == data, f"{name} differs at the site"
    assert not watcher.partial and not watcher.twice
    assert not glob.glob(str(remote / ".*.tmp"))
    print(
        f"\n{KILLS} kills, {FILES} transfers: {sum(uph.values())} UPH lines, {len(done)} Done, "
        f"{len(set(subscriber.ids))} distinct message ids ({len(subscriber.ids)} received), "
        f"{interruptions} interrupted attempts, {len(interrupted_err)} ERR lines for them"
    )
