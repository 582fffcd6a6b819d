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
        value = values[name] or ""
        if name == "target":  # the target's directory: a clean relative path (see clean_target)
            return clean_target(value) if value else ""
        if name == "name":  # a file name: one segment
            if "/" in value or clean_target(value) != value:
                raise InvalidInput(f"the file name {value!r} is not a single path segment")
            return value
        return check_path_value(name, value) or ""

    rendered = _TOKEN.sub(expand, template)
    if {".", ".."} & set(rendered.split("/")):
        raise InvalidInput(f"directory template {template!r} renders {rendered!r}, which contains '.' or '..'")
    return rendered


# --- Path safety: every path pds builds from outside input passes through here ------------------

#: What a metadata value (stream, type, time base, time step) may hold: it becomes a directory name
#: at a site through a host's directory template, so no separator, no space, no shell or URL syntax.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:+@=,-]{1,128}")


def check_path_value(name: str, value: str | None) -> str | None:
    """Return a metadata value that may become part of a path, or raise InvalidInput (None and ""
    pass: the template's token then expands to nothing)."""
    if not value:
        return value
    if not _SAFE_VALUE.fullmatch(value) or set(value) == {"."}:
        raise InvalidInput(
            f"{name} {value!r} may become a directory at a site: use at most 128 letters, digits and "
            "'_', '.', ':', '+', '@', '=', ',' or '-' (not '.' or '..' alone)"
        )
    return value


def static_prefix(template: str) -> str:
    """The directories of a template before its first `$token`: what every rendering lies under."""
    kept: list[str] = []
    for segment in template.split("/"):
        if "$" in segment:
            break
        kept.append(segment)
    return "/".join(kept).rstrip("/") or ("/" if template.startswith("/") else "")


def inside(root: str, path: str, *, what: str = "path") -> str:
    """`path` normalised, if it lies inside `root` (an absolute path must start with `root`; a
    relative one is taken relative to it); else InvalidInput. No `.` or `..` is accepted at all, so
    nothing here depends on how a server resolves them."""
    if not path or _CONTROL.search(path):
        raise InvalidInput(f"the {what} {path!r} is empty or contains a control character or a backslash")
    segments = [s for s in path.split("/") if s]
    if "." in segments or ".." in segments:
        raise InvalidInput(f"the {what} {path!r} contains '.' or '..'")
    base = [s for s in root.split("/") if s]
    if path.startswith("/"):
        if not root.startswith("/") or segments[: len(base)] != base or len(segments) == len(base):
            where = f"the host's directory {root!r}" if root.strip("/") else "the host's directory"
            raise InvalidInput(f"the {what} {path!r} is outside {where}; give a path inside it")
        return "/" + "/".join(segments)
    if not segments:
        raise InvalidInput(f"the {what} {path!r} names no file")
    joined = "/".join(base + segments)
    return "/" + joined if root.startswith("/") else joined
