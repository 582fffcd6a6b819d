"""Every `pds …` command shown in the README and the documentation parses with the real `pds` parser,
so a renamed option or subcommand breaks this test instead of a reader's paste."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from api.cli import parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:sh|bash)\n(.*?)```", re.DOTALL)


def pds_commands(text: str) -> list[list[str]]:
    """The argument lists of the `pds` commands in a page's sh/bash blocks."""
    commands = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                words = list(lexer)
            except ValueError:  # an unbalanced quote inside an example's prose: not a command line
                continue
            segment: list[str] = []
            for word in [*words, ";"]:
                if word in {";", "&&", "||", "|", "&"}:
                    if segment and segment[0] == "pds":
                        if segment[-1].endswith(")") and not segment[-1].startswith("$("):
                            segment[-1] = segment[-1].removesuffix(")")
                        commands.append(segment[1:])
                    segment = []
                elif not segment and re.fullmatch(r"\w+=\$\(pds", word):
                    segment.append("pds")  # id=$(pds push …): the command inside the substitution
                elif not segment and "=" in word and not word.startswith("-"):
                    continue  # VAR=value before a command
                else:  # a shell variable stands for a value the reader has: any value parses the same
                    segment.append("1" if re.fullmatch(r"\$\w+", word) else word)
    return commands


EXAMPLES = [
    pytest.param(args, id=f"{page.relative_to(ROOT)}: pds {' '.join(args)}"[:120])
    for page in PAGES
    for args in pds_commands(page.read_text(encoding="utf-8"))
]


def test_the_docs_show_many_commands():
    assert len(EXAMPLES) > 80


@pytest.mark.parametrize("args", EXAMPLES)
def test_a_documented_command_parses(args):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(args)
        except SystemExit as exc:
            assert exc.code == 0, stderr.getvalue()


#: `PDS_` variables the docs name that are not settings of `catalog/settings.py`, and who reads them.
NOT_SETTINGS = {
    "PDS_USER": "the pds command and PdsClient",
    "PDS_PASSWORD": "the pds command and PdsClient",
    "PDS_TOKEN": "the pds command and PdsClient",
    "PDS_API_SERVER": "python -m api (granian or uvicorn)",
    "PDS_CHECKOUT": "prefect.yaml's pull step",
    "PDS_PUBLIC_HOST": "infra/compose/env.example",
    "PDS_TEST_WORKERS": "infra/test.sh (pytest-xdist workers)",
    "PDS_TOPOLOGY_DIR": "infra/production-local.sh (where the production topology keeps its state)",
}


def test_every_pds_variable_the_docs_name_exists():
    from catalog.settings import Settings

    settings = {f"PDS_{name.upper()}" for name in Settings.model_fields}
    named = {v for page in PAGES for v in re.findall(r"\bPDS_[A-Z0-9_]+\b", page.read_text(encoding="utf-8"))}
    assert named - settings - set(NOT_SETTINGS) == set()


def test_every_module_the_docs_run_exists():
    import importlib.util

    named = {m for page in PAGES for m in re.findall(r"python -m ([\w.]+)", page.read_text(encoding="utf-8"))}
    assert named and [m for m in sorted(named) if importlib.util.find_spec(m) is None] == []


def test_the_readme_stays_short_and_about_the_system():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "bash infra/up.sh" in text and "bash infra/test.sh" in text  # CI and reviewers read these
    assert not re.search(r"\b[Ii]ssue\b|#\d+\b|/work/|/home/|/tmp/", text)
