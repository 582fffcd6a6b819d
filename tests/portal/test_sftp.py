"""The portal over SFTP with stock clients: OpenSSH sftp (batch mode, key login), scp and rclone (password)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from catalog.database import session_scope
from catalog.models import DataTransfer
from tests.portal.conftest import PASSWORD

RCLONE = str(Path(sys.executable).with_name("rclone"))
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]


def sftp_batch(server, key, commands, user="alice"):
    command = ["sftp", "-b", "-", "-P", str(server.port), "-i", str(key), *SSH_OPTIONS, f"{user}@127.0.0.1"]
    return subprocess.run(command, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=120)


def rclone(server, *args, user="alice", password=PASSWORD):
    obscured = subprocess.run([RCLONE, "obscure", password], capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ) | {
        "RCLONE_CONFIG_PORTAL_TYPE": "sftp",
        "RCLONE_CONFIG_PORTAL_HOST": "127.0.0.1",
        "RCLONE_CONFIG_PORTAL_PORT": str(server.port),
        "RCLONE_CONFIG_PORTAL_USER": user,
        "RCLONE_CONFIG_PORTAL_PASS": obscured,
        "RCLONE_CONFIG_PORTAL_SHELL_TYPE": "none",
        "RCLONE_CONFIG": os.devnull,
    }
    return subprocess.run([RCLONE, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def statuses(engine):
    with session_scope(engine) as session:
        return sorted((t.destination_name, t.target, t.status) for t in session.exec(select(DataTransfer)))


def test_openssh_sftp_pushes_and_pulls(sftp_portal, alice_key, world, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    done = sftp_batch(
        sftp_portal,
        alice_key,
        [
            "mkdir /bucket/in",
            f"put {source} /bucket/in/f.bin",
            f"put {source} /bucket/in/.g.bin",
            "rename /bucket/in/.g.bin /bucket/in/g.bin",
            "cd /bucket/in",
            "ls -l",
            f"get f.bin {tmp_path / 'back.bin'}",
            "rm g.bin",
        ],
    )
    assert done.returncode == 0, done.stderr
    assert "f.bin" in done.stdout
    assert md5(tmp_path / "back.bin") == md5(source)
    assert statuses(world) == [("bucket", "in/f.bin", "Done"), ("bucket", "in/g.bin", "Stopped")]


@pytest.mark.parametrize("mode", ["sftp", "legacy"])
def test_scp_pushes_and_pulls(sftp_portal, alice_key, world, tmp_path, mode):
    source = tmp_path / "s.bin"
    source.write_bytes(os.urandom(1024 * 1024 + 1))
    base = ["scp", "-q", "-P", str(sftp_portal.port), "-i", str(alice_key), *SSH_OPTIONS]
    base += ["-O"] if mode == "legacy" else []
    up = subprocess.run([*base, str(source), "alice@127.0.0.1:/bucket/s.bin"], capture_output=True, timeout=120)
    assert up.returncode == 0, up.stderr
    down = subprocess.run([*base, "alice@127.0.0.1:/bucket/s.bin", str(tmp_path / "s2.bin")], capture_output=True)
    assert down.returncode == 0, down.stderr
    assert md5(tmp_path / "s2.bin") == md5(source)
    assert statuses(world) == [("bucket", "s.bin", "Done")]


def test_rclone_copies_to_and_from_the_sftp_portal(sftp_portal, world, tmp_path):
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    for i in range(3):
        (local / f"a{i}.bin").write_bytes(os.urandom(200_000 + i))
    (local / "sub" / "b.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    up = rclone(sftp_portal, "copy", str(local), "portal:/bucket/sync")
    assert up.returncode == 0, (statuses(world), up.stderr[-300:])
    back = tmp_path / "back"
    down = rclone(sftp_portal, "copy", "portal:/bucket/sync", str(back))
    assert down.returncode == 0, down.stderr
    for path in local.rglob("*.bin"):
        assert md5(back / path.relative_to(local)) == md5(path)
    listed = rclone(sftp_portal, "lsf", "-R", "portal:/bucket/sync")
    assert sorted(listed.stdout.split()) == ["a0.bin", "a1.bin", "a2.bin", "sub/", "sub/b.bin"]


def test_without_put_sftp_uploads_fail_and_register_nothing(sftp_portal, world, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"data")
    done = rclone(sftp_portal, "copyto", str(source), "portal:/bucket/f.bin", user="bob", password="pw-bob-1")
    assert done.returncode != 0
    assert "may not put" in done.stderr or "ermission denied" in done.stderr
    assert statuses(world) == []


@pytest.mark.parametrize(
    "path",
    [
        "/bucket/../other/secret.bin",
        "/../../other/secret.bin",
        "../other/secret.bin",
        "/other/secret.bin",
        "/bucket/..\\other\\secret.bin",
        "/bucket/%2e%2e/other/secret.bin",
    ],
)
def test_sftp_paths_never_reach_another_users_destination(sftp_portal, alice_key, world, tmp_path, path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"bob's secret")
    assert (
        rclone(
            sftp_portal, "copyto", str(secret), "portal:/other/secret.bin", user="bob", password="pw-bob-1"
        ).returncode
        == 0
    )
    got = tmp_path / "got.bin"
    done = sftp_batch(sftp_portal, alice_key, [f'get "{path}" {got}'])
    assert done.returncode != 0
    assert not got.exists()
    done = sftp_batch(sftp_portal, alice_key, [f'put {secret} "{path}"', f'rm "{path}"', f"symlink /other {path}x"])
    assert done.returncode != 0
    # Over SFTP `%2e%2e` is a literal name: a file in alice's own bucket, never a way out of it.
    assert [s for s in statuses(world) if s[0] != "bucket"] == [("other", "secret.bin", "Queued")]


def test_after_two_puts_and_a_delete_no_older_version_shows_again(sftp_portal, alice_key, world, tmp_path):
    v1, v2 = tmp_path / "v1.bin", tmp_path / "v2.bin"
    v1.write_bytes(b"version 1")
    v2.write_bytes(b"version 2")
    done = sftp_batch(
        sftp_portal, alice_key, [f"put {v1} /bucket/v.bin", f"put {v2} /bucket/v.bin", "rm /bucket/v.bin"]
    )
    assert done.returncode == 0, done.stderr
    listing = sftp_batch(sftp_portal, alice_key, ["ls -1 /bucket"])
    assert listing.returncode == 0, listing.stderr
    assert "v.bin" not in listing.stdout
    assert sftp_batch(sftp_portal, alice_key, [f"get /bucket/v.bin {tmp_path / 'back.bin'}"]).returncode != 0
    assert statuses(world) == [("bucket", "v.bin", "Stopped")] * 2
