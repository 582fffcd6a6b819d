"""The generated documentation pages are what the code says now: a stale page fails here.

Regenerate with `.venv/bin/python docs/generate.py` and commit the result.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_page_is_up_to_date(generate):
    assert generate.stale() == [], "run: .venv/bin/python docs/generate.py"


def test_the_state_diagram_draws_every_status_and_every_edge_of_the_table(generate):
    from catalog.statuses import TransferStatus

    svg = (DOCS / "reference" / "statuses.svg").read_text()
    for status in TransferStatus:
        assert f">{status.value}</text>" in svg
    assert svg.count("marker-end=") == len(generate.status_edges())
    # Interrupted is entered from Transferring only, as the design says.
    assert [s for (s, t) in generate.status_edges() if t == "Interrupted"] == ["Transferring"]


def test_every_command_and_setting_is_in_the_reference(generate):
    from api.cli import parser
    from catalog.settings import Settings

    cli = (DOCS / "reference" / "cli.md").read_text()
    for name in generate._subcommands(parser()):
        assert f"## `pds {name}`" in cli
    settings = (DOCS / "reference" / "settings.md").read_text()
    for field in Settings.model_fields:
        assert f"`PDS_{field.upper()}`" in settings


def test_the_site_builds_strictly_and_loads_nothing_from_the_network(tmp_path):
    import re
    import subprocess
    import sys

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=DOCS.parent,
        check=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    # A page may link to the outside world, but may not need it to render: no external script,
    # stylesheet, font or image.
    loads = re.compile(r'<(?:script|img|link)\b[^>]*(?:src|href)="(https?:)?//', re.IGNORECASE)
    offenders = [str(p.relative_to(site)) for p in site.rglob("*.html") if loads.search(p.read_text())]
    assert offenders == []
