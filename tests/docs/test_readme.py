"""The README's first delivery, run as written: its commands, pasted into bash, against `pds up` and a
real OpenSSH server standing in for the reader's SFTP site.

The only thing the test supplies is what the README asks the reader to supply: the site's address,
login, directory and key, as the environment variables of its first block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_embedded import stack  # noqa: F401 — the same `pds up` fixture, started for this module

README = Path(__file__).resolve().parents[2] / "README.md"


def first_delivery_blocks() -> tuple[str, str]:
    """The section's two shell blocks: the reader's site, then the commands."""
    section = README.read_text().split("## A first delivery", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the first delivery is two sh blocks: the site, then the commands"
    return blocks[0], blocks[1]


def test_the_first_delivery_runs_as_written(stack, sshd, tmp_path):  # noqa: F811
    site_block, commands = first_delivery_blocks()
    site_variables = set(re.findall(r"\b(SITE\w*)=", site_block))
    site_dir = sshd.data_dir / "readme"
    site_dir.mkdir()
    site = {
        "SITE": f"{sshd.host}:{sshd.port}",
        "SITE_LOGIN": sshd.username,
        "SITE_DIR": str(site_dir),
        "SITE_KEY": str(sshd.client_key_path),
        "SITE_KNOWN_HOSTS": str(sshd.known_hosts_path),
    }
    assert site_variables == set(site), "the README's site block names other variables than the test gives"
    # The reader runs the commands from the checkout, whose .venv holds pds.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    before = datetime.now(UTC)
    run = subprocess.run(
        ["bash", "-e", "-c", commands],
        cwd=tmp_path,
        env=stack.env | site,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "transfer" in run.stdout and "site1:2026/forecast.grib" in run.stdout

    first, later = sorted(stack.client.transfers(destination="site1"), key=lambda t: t["id"])
    (done,) = stack.client.wait_for_data_file(first["data_file_id"], timeout=120)
    assert done["status"] == "Done"
    assert (site_dir / "2026" / "forecast.grib").read_bytes() == (tmp_path / "forecast.grib").read_bytes()

    # `pds status` takes the data file id that push printed.
    status = stack.pds("status", str(first["data_file_id"]))
    assert status.returncode == 0 and "Done" in status.stdout
    history = [h["to_status"] for h in stack.client.transfer(first["id"])["history"]]
    assert history == ["Arriving", "Queued", "Transferring", "Done"]

    # --at one hour from now: queued, not before then, failing 6 hours after the push if still waiting.
    later = stack.client.transfer(later["id"])
    assert later["target"] == "later.grib" and later["status"] == "Queued"
    scheduled = datetime.fromisoformat(later["scheduled_at"]).replace(tzinfo=UTC)
    assert before + timedelta(minutes=58) < scheduled < before + timedelta(minutes=62)
    expires = datetime.fromisoformat(later["expires_at"]).replace(tzinfo=UTC)
    assert before + timedelta(hours=6) <= expires < datetime.now(UTC) + timedelta(hours=6)
    assert not (site_dir / "later.grib").exists()


def test_exit_codes_are_what_the_readme_says(stack):  # noqa: F811
    refused = stack.pds("status", "999999999")
    assert refused.returncode == 1 and refused.stderr.startswith("pds: error:")
    assert len(refused.stderr.strip().splitlines()) == 1
    usage = stack.pds("push", "forecast.grib")  # no --destination
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert stack.pds("--json", "status", "999999999").stderr.startswith('{"error":')


def test_the_python_example_runs_as_written(stack, tmp_path, monkeypatch):  # noqa: F811
    section = README.read_text().split("## A first delivery", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    for key in ("PDS_API_URL", "PDS_USER", "PDS_PASSWORD"):
        monkeypatch.setenv(key, stack.env[key])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "forecast.grib").write_bytes(os.urandom(4096))
    if "site1" not in {d["destination"]["name"] for d in stack.client.destinations()}:
        # The shell example makes site1 when it runs first; alone, this test delivers to a directory.
        stack.client.create_destination("site1")
        stack.client.create_host("site1-disk", "file", address=str(tmp_path / "site"))
        stack.client.attach_host("site1", "site1-disk")
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    (transfer,) = stack.client.transfers(data_file_id=namespace["result"]["data_file_id"])
    assert transfer["target"] == "2026/from-python.grib"
    assert (README.parent / "infra" / "notebooks" / "quickstart.ipynb").exists()
