"""Eclipse Mosquitto as a process: the MQTT broker that transfer notifications are published to.

A real broker (MQTT v5, retained messages, message expiry, persistence) rather than an in-Python
stand-in, because what a subscriber sees depends on the broker: a retained message reaching a late
subscriber, or surviving a broker restart, is the broker's behaviour, not the client's.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.servers._common import IS_ROOT, Server, free_port, require, spawn, terminate, wait_until


class MosquittoServer(Server):
    """`mosquitto -c <root_dir>/mosquitto.conf` listening on 127.0.0.1:`port`, anonymous access allowed.

    Attributes: `host`, `port`, `url` (`mqtt://127.0.0.1:PORT`), `data_dir` (persistence). With
    `auth=True` a second listener on `auth_port` accepts only `username`/`password`; `auth_url` carries
    them (`mqtt://user:password@127.0.0.1:PORT`).

    Persistence is on, and `stop()` is a SIGTERM, on which the broker saves its database: `restart()`
    therefore keeps retained messages, as a production broker restart would.
    """

    username = "pds"
    password = "notify-secret"

    def __init__(self, root_dir: Path, *, auth: bool = False) -> None:
        self.root = Path(root_dir).resolve()
        self.host = "127.0.0.1"
        self.auth = auth
        self._pick_ports()
        self._started_once = False
        self.data_dir = self.root / "data"
        self.config_path = self.root / "mosquitto.conf"
        self.password_file = self.root / "passwd"
        self.log = self.root / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.auth_port = free_port() if self.auth else None
        self.auth_url = f"mqtt://{self.username}:{self.password}@{self.host}:{self.auth_port}" if self.auth else None

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "per_listener_settings true",  # anonymous on one listener, passwords on the other
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if IS_ROOT:
            # As root Mosquitto drops to the `mosquitto` user, which cannot reach a persistence directory
            # under pytest's temp tree (its parents are 0700 root): chowning the directory alone is not
            # enough, and the failure only shows when the database is saved, at shutdown.
            lines.append("user root")
        lines += [f"listener {self.port} {self.host}", "allow_anonymous true"]
        if self.auth:
            passwd = require("mosquitto_passwd", "the Debian package mosquitto")
            self.password_file.unlink(missing_ok=True)
            subprocess.run(
                [passwd, "-b", "-c", str(self.password_file), self.username, self.password],
                check=True,
                capture_output=True,
            )
            lines += [
                f"listener {self.auth_port} {self.host}",
                "allow_anonymous false",
                f"password_file {self.password_file}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> Self:
        if self.process is not None:
            return self
        binary = require("/usr/sbin/mosquitto", "the Debian package mosquitto")
        for attempt in range(3):
            self._write_config()
            self.process = spawn([binary, "-c", str(self.config_path)], self.log)
            try:
                wait_until(self._connack, 30, "mosquitto", log=self.log, process=self.process)
            except BaseException:
                self.stop()
                # A port that was free a moment ago can be taken before the broker binds it (by
                # another server of the session, or as an outgoing connection's ephemeral port): on
                # a first start, pick other ports and try again. A restart keeps its ports.
                taken = self.log.exists() and "Address already in use" in self.log.read_text(errors="replace")
                if taken and not self._started_once and attempt < 2:
                    self._pick_ports()
                    continue
                raise
            self._started_once = True
            return self
        raise AssertionError("unreachable")

    def _connack(self) -> bool:
        """Whether the anonymous listener completes an MQTT v5 handshake (not just a TCP accept)."""
        accepted = threading.Event()

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
            if not reason.is_failure:
                accepted.set()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"ready-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        client.on_connect = on_connect
        client.connect(self.host, self.port, keepalive=5)
        try:
            client.loop_start()
            return accepted.wait(2)
        finally:
            client.disconnect()
            client.loop_stop()

    def restart(self) -> None:
        """Stop (the broker saves its database) and start again on the same ports and data directory."""
        self.stop()
        self.start()

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
