"""Target paths and directory templates.

A target is where a data file lands at a destination, relative to the host's directory. It comes from
outside (the portal, `pds push`), so it is checked here once: no absolute paths, no `..`, no empty or
control-character segments. Directory templates follow OpenECPDS's `$name` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from catalog.errors import InvalidInput

#: Tokens a host's directory template may use (besides `$date{format}`).
TEMPLATE_TOKENS = ("destination", "target", "name", "stream", "type", "time_base", "time_step")

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_TOKEN = re.compile(r"\$(\w+)(?:\{([^}]*)\})?")


def clean_target(target: str) -> str:
    """Return `target` normalised (no duplicate or trailing slashes) or raise InvalidInput."""
    if not target or not target.strip():
        raise InvalidInput("the target path is empty")
    if target.startswith("/"):
        raise InvalidInput(f"the target path {target!r} is absolute; give a path relative to the destination")
    if _CONTROL.search(target):
        raise InvalidInput(f"the target path {target!r} contains a control character or a backslash")
    segments = [s for s in target.split("/") if s]
    if "." in segments or ".." in segments:  # list membership: C speed, for listings of 100,000 names
        raise InvalidInput(f"the target path {target!r} contains '.' or '..'")
    if len(target) > 1024:
        raise InvalidInput("the target path is longer than 1024 characters")
    return "/".join(segments)


def render_directory(template: str, values: Mapping[str, str | None], when: datetime) -> str:
    """Expand `$token` and `$date{%Y%m%d}` in a host's directory template.

    Unknown tokens are an error rather than left in place, so a typo never creates a directory
    literally named `$destnation` at a site.
    """

    def expand(match: re.Match[str]) -> str:
        name, fmt = match.group(1), match.group(2)
        if name == "date":
            return when.strftime(fmt or "%Y%m%d")
        if name not in values:
            raise InvalidInput(f"unknown token ${name} in directory template {template!r}")
        return values[name] or ""

    return _TOKEN.sub(expand, template)
