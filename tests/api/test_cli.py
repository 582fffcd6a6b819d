"""The `pds` command against the API (Litestar's TestClient stands in for the network)."""

from __future__ import annotations

import hashlib
import json

import pytest


def test_push_prints_the_data_file_id_and_status_shows_the_history(pds, tmp_path):
    f = tmp_path / "obs.bufr"
    f.write_bytes(b"BUFR" * 1000)
    code, out, err = pds("push", str(f), "--destination", "site1", "--target", "in/obs.bufr", "--priority", "3")
    assert (code, err) == (0, "")
    data_file_id = int(out.strip())
    code, out, _ = pds("--json", "status", str(data_file_id))
    status = json.loads(out)
    assert status["data_file"]["md5"] == hashlib.md5(b"BUFR" * 1000).hexdigest()
    assert status["transfers"][0]["status"] == "Queued"
    code, out, _ = pds("status", str(data_file_id))
    assert "Arriving -> Queued" in out


@pytest.mark.parametrize(
    ("argv", "message", "exit_code"),
    [
        (["push", "{f}", "-d", "nosuch"], "404 no destination 'nosuch'", 1),
        (["push", "{f}", "-d", "site1", "-p", "100"], "400 priority must be from 0", 1),
        (["push", "{f}", "-d", "site1", "-t", "../escape"], "contains '.' or '..'", 1),
        (["push", "{f}", "-d", "site1", "-t", "/abs/path"], "is absolute", 1),
        (["push", "{missing}", "-d", "site1"], "no such file", 1),
        (["push", "{directory}", "-d", "site1"], "is a directory", 1),
        (["status", "12345"], "404 no data file 12345", 1),
        # Bad usage exits 2, whether argparse or the command finds it.
        (["status", "twelve"], "invalid int value: 'twelve'", 2),
        (["host", "add", "x", "--protocol", "file", "--password-env", "PDS_UNSET_VAR"], "PDS_UNSET_VAR is empty", 2),
        (["transfer", "priority", "1"], "needs the new priority", 2),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(pds, tmp_path, argv, message, exit_code):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    argv = [a.format(f=f, missing=tmp_path / "missing.bin", directory=tmp_path) for a in argv]
    code, out, err = pds(*argv)
    assert code == exit_code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(("pds: error: ", f"pds {argv[0]}: error: "))
    assert message in err


def test_missing_credentials_say_what_to_set(pds, monkeypatch, tmp_path):
    monkeypatch.delenv("PDS_USER")
    monkeypatch.delenv("PDS_PASSWORD")
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    code, _, err = pds("push", str(f), "-d", "site1")
    assert code == 1 and "401" in err and "PDS_USER" in err


def test_destination_and_host_commands(pds, tmp_path):
    assert pds("destination", "add", "site2", "--max-parallel", "2")[0] == 0
    code, out, _ = pds("host", "add", "h2", "--protocol", "file", "--address", str(tmp_path), "--destination", "site2")
    assert code == 0 and "attached to site2" in out
    code, out, _ = pds("destination", "list")
    assert "site2\tactive\thosts: h2" in out
    code, out, _ = pds("--json", "host", "list")
    assert {h["name"] for h in json.loads(out)} == {"h1", "h2"}


def test_a_destination_gets_and_loses_its_proxy_host(pds, tmp_path):
    code, out, _ = pds(
        "host", "add", "eu-west", "--protocol", "file", "--address", str(tmp_path / "eu"), "--kind", "proxy",
        "-o", "lead_seconds=900",
    )  # fmt: skip
    assert code == 0
    code, out, _ = pds("destination", "set", "site1", "--proxy-host", "eu-west")
    assert (code, out.strip()) == (0, "destination site1 updated: proxy_host")
    assert "site1\tactive\thosts: h1\tproxy host: eu-west" in pds("destination", "list")[1]
    code, out, _ = pds("--json", "destination", "show", "site1")
    assert json.loads(out)["hosts"] == {"dissemination": ["h1"], "acquisition": [], "proxy": ["eu-west"]}
    code, _, err = pds("destination", "set", "site1", "--proxy-host", "nosuch")
    assert code == 1 and "404 no host 'nosuch'" in err
    assert pds("destination", "set", "site1", "--proxy-host", "none", "--max-starts", "4")[0] == 0
    code, out, _ = pds("--json", "destination", "show", "site1")
    shown = json.loads(out)
    assert shown["hosts"]["proxy"] == [] and shown["destination"]["max_starts"] == 4
