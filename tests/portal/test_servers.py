"""The portal's FTP and SFTP servers as `pds up` runs them: `python -m api.portal_ftp` / `api.portal_sftp`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from catalog.data_users import DataUserSpec, create_data_user, grant
from catalog.database import make_engine, migrate, session_scope
from catalog.models import Destination
from tests.servers._common import free_port, tcp_ready, wait_until


def test_pds_up_portal_servers_serve_the_same_tree(tmp_path):
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'pds.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        session.add(Destination(name="bucket"))
        session.flush()
        create_data_user(session, DataUserSpec("carol", "carol-pw-1"))
        grant(session, "carol", "all", destination="bucket")
    engine.dispose()
    ftp_port, sftp_port = free_port(), free_port()
    env = dict(os.environ) | {
        "PDS_DATA_DIR": str(data),
        "PDS_PORTAL_FTP_PORT": str(ftp_port),
        "PDS_PORTAL_SFTP_PORT": str(sftp_port),
    }
    servers = [
        subprocess.Popen([sys.executable, "-m", module], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for module in ("api.portal_ftp", "api.portal_sftp")
    ]
    try:
        for port in (ftp_port, sftp_port):
            wait_until(lambda port=port: tcp_ready("127.0.0.1", port), timeout=60, what=f"a portal server on {port}")
        source = tmp_path / "f.bin"
        source.write_bytes(os.urandom(500_000))
        up = subprocess.run(
            ["curl", "-sS", "-u", "carol:carol-pw-1", "-T", str(source), f"ftp://127.0.0.1:{ftp_port}/bucket/f.bin"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        rclone = os.path.join(os.path.dirname(sys.executable), "rclone")
        obscured = subprocess.run([rclone, "obscure", "carol-pw-1"], capture_output=True, text=True).stdout.strip()
        back = tmp_path / "back.bin"
        down = subprocess.run(
            [rclone, "copyto", "--sftp-host", "127.0.0.1", "--sftp-port", str(sftp_port), "--sftp-user", "carol",
             "--sftp-pass", obscured, "--sftp-shell-type", "none", ":sftp:/bucket/f.bin", str(back)],
            capture_output=True, text=True, timeout=60, env=env | {"RCLONE_CONFIG": os.devnull},
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        assert hashlib.md5(back.read_bytes()).digest() == hashlib.md5(source.read_bytes()).digest()
        assert "Action=download" in (data / "logs" / "events.log").read_text()
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
