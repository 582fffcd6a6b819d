"""The portal over FTP and explicit FTPS with stock clients: curl and lftp push and pull."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import ssl
import subprocess

import pytest
from sqlmodel import select

from catalog.data_users import update_data_user
from catalog.database import session_scope
from catalog.models import DataTransfer
from tests.portal.conftest import PASSWORD


def curl(server, *args, user=f"alice:{PASSWORD}"):
    tls = ["--ssl-reqd", "--cacert", str(server.cert)] if server.mode == "ftps" else []
    command = ["curl", "-sS", *tls, "-u", user, *args]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def url(server, path):
    return f"ftp://127.0.0.1:{server.port}{path}"


def lftp(server, commands, user="alice", password=PASSWORD):
    settings = "set ftp:ssl-force true; set ftp:ssl-protect-data true; " if server.mode == "ftps" else ""
    settings += f"set ssl:ca-file {server.cert}; set net:max-retries 1; set xfer:clobber on; "
    script = settings + f"open -u {user},{password} -p {server.port} 127.0.0.1; " + "; ".join(commands)
    return subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=120, check=False)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def statuses(engine):
    with session_scope(engine) as session:
        return sorted((t.destination_name, t.target, t.status) for t in session.exec(select(DataTransfer)))


def test_curl_and_lftp_push_and_pull(ftp_portal, world, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 9))
    up = curl(ftp_portal, "--ftp-create-dirs", "-T", str(source), url(ftp_portal, "/bucket/c/f.bin"))
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back.bin"
    assert curl(ftp_portal, "-o", str(back), url(ftp_portal, "/bucket/c/f.bin")).returncode == 0
    assert md5(back) == md5(source)
    listing = curl(ftp_portal, url(ftp_portal, "/bucket/c/")).stdout.decode()
    assert "f.bin" in listing and str(source.stat().st_size) in listing

    done = lftp(
        ftp_portal,
        [f"put {source} -o /bucket/l/g.bin", "cd /bucket/l", "ls", f"get g.bin -o {tmp_path / 'g.bin'}", "rm g.bin"],
    )
    assert done.returncode == 0, done.stderr
    assert md5(tmp_path / "g.bin") == md5(source)
    assert statuses(world) == [("bucket", "c/f.bin", "Done"), ("bucket", "l/g.bin", "Stopped")]


def test_ftp_without_put_and_traversal(ftp_portal, world, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"bob's secret")
    denied = curl(ftp_portal, "-T", str(secret), url(ftp_portal, "/bucket/x.bin"), user="bob:pw-bob-1")
    assert denied.returncode != 0
    assert (
        curl(ftp_portal, "-T", str(secret), url(ftp_portal, "/other/secret.bin"), user="bob:pw-bob-1").returncode == 0
    )
    got = tmp_path / "got.bin"
    for path in ("/bucket/../other/secret.bin", "/../other/secret.bin", "/other/secret.bin"):
        done = lftp(ftp_portal, [f"get {path} -o {got}"])
        assert done.returncode != 0
        assert not got.exists() or b"secret" not in got.read_bytes()
        done = lftp(ftp_portal, [f"put {secret} -o {path}"])
        assert done.returncode != 0
    assert statuses(world) == [("other", "secret.bin", "Queued")]


def test_ftp_quota_answers_552(ftp_portal, world, tmp_path):
    with session_scope(world) as session:
        update_data_user(session, "alice", {"upload_quota_bytes": 1000})
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"s" * 1000)
    big.write_bytes(b"b" * 5000)
    done = curl(ftp_portal, "-v", "-T", str(big), url(ftp_portal, "/bucket/big.bin"))
    assert done.returncode != 0
    assert b"552" in done.stderr
    assert curl(ftp_portal, "-T", str(small), url(ftp_portal, "/bucket/small.bin")).returncode == 0
    again = curl(ftp_portal, "-v", "-T", str(small), url(ftp_portal, "/bucket/again.bin"))
    assert again.returncode != 0
    assert b"552" in again.stderr
    assert statuses(world) == [("bucket", "big.bin", "Failed"), ("bucket", "small.bin", "Queued")]


def test_behind_nat_passive_answers_name_the_public_address(portal, world):
    """Published through a container or a load balancer, the server names the address clients reach."""
    import ftplib
    import threading

    from api.portal_ftp import make_server
    from tests.servers._common import free_port

    port = free_port()
    server = make_server(portal, "127.0.0.1", port, masquerade_address="127.0.0.2")
    thread = threading.Thread(target=server.serve_forever, kwargs={"handle_exit": False}, daemon=True)
    thread.start()
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login("alice", PASSWORD)
        answer = ftp.sendcmd("PASV")
        assert answer.startswith("227") and "(127,0,0,2," in answer
        ftp.close()
    finally:
        server.close_all()
        thread.join(timeout=10)


def ftp_session(server, user="alice", password=PASSWORD):
    if server.mode == "ftps":
        client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(server.cert)), timeout=30)
        client.connect("127.0.0.1", server.port)
        client.login(user, password)
        client.prot_p()
    else:
        client = ftplib.FTP(timeout=30)
        client.connect("127.0.0.1", server.port)
        client.login(user, password)
    return client


def test_an_illegal_path_answers_550_and_the_session_goes_on(ftp_portal, world):
    client = ftp_session(ftp_portal)
    try:
        client.storbinary("STOR /bucket/ok.bin", io.BytesIO(b"ok"))
        for command in (
            lambda: client.cwd("/bucket\\sub"),
            lambda: client.retrbinary("RETR /bucket/a\\b.bin", lambda _: None),
            lambda: client.storbinary("STOR /bucket/a\\b.bin", io.BytesIO(b"x")),
            lambda: client.delete("/bucket/a\\b.bin"),
            lambda: client.mkd("/bucket/a\\b"),
            lambda: client.sendcmd("TYPE I") and client.size("/bucket/a\\b.bin"),  # SIZE needs binary mode
            lambda: client.nlst("/bucket/a\\b"),
            lambda: client.rename("/bucket/ok.bin", "/bucket/a\\b.bin"),
            lambda: client.sendcmd("MDTM /bucket/a\\b.bin"),
        ):
            with pytest.raises(ftplib.error_perm, match="^550 .*backslash"):
                command()
        # The same session still works.
        assert client.nlst("/bucket") in (["/bucket/ok.bin"], ["ok.bin"])
        client.voidcmd("TYPE I")
        assert client.size("/bucket/ok.bin") == 2
    finally:
        client.quit()
    assert statuses(world) == [("bucket", "ok.bin", "Queued")]


def test_after_two_puts_and_a_delete_no_older_version_shows_again(ftp_portal, world, tmp_path):
    v1, v2 = tmp_path / "v1.bin", tmp_path / "v2.bin"
    v1.write_bytes(b"version 1")
    v2.write_bytes(b"version 2")
    done = lftp(ftp_portal, [f"put {v1} -o /bucket/v.bin", f"put {v2} -o /bucket/v.bin", "rm /bucket/v.bin"])
    assert done.returncode == 0, done.stderr
    listing = lftp(ftp_portal, ["cls -1 /bucket/"])
    assert "v.bin" not in listing.stdout
    back = tmp_path / "back.bin"
    assert lftp(ftp_portal, [f"get /bucket/v.bin -o {back}"]).returncode != 0
    assert not back.exists() or back.read_bytes() == b""
    assert statuses(world) == [("bucket", "v.bin", "Stopped")] * 2
