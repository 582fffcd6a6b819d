"""Which listed files a listing rule keeps, and the target each gets at the destination.

Plain values and the standard library only (with `catalog.paths`), so that a listing process
(`blocks.sftp_lister`) applies a rule where it lists, and sends back only what is kept, already
named: registering a large listing then leaves this work to another core.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from typing import Any

from catalog.paths import clean_target


@dataclass(frozen=True, slots=True)
class Listed:
    """An entry a listing kept: its path on the host, its target at the destination, what it is."""

    path: str
    target: str
    size: int | None
    modified: datetime | None
    meta: dict[str, Any] | None = None
    """Metadata the listing gave (a STAC item), recorded on the data file."""


@dataclass(frozen=True)
class Selection:
    """A listing rule's filters and target prefix, with its age limits fixed at one moment."""

    pattern: str | None = None
    wildcard: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    newest: datetime | None = None
    """Files modified after this are too young (the rule's minimum age)."""
    oldest: datetime | None = None
    """Files modified before this are too old (the rule's maximum age)."""
    target_prefix: str = ""

    @classmethod
    def of(cls, rule: Any, now: datetime) -> Selection:
        """The selection of a listing rule (anything with its attributes) at `now`."""
        # "modified at least min_age ago" is "modified before now - min_age"; likewise for max_age.
        return cls(
            pattern=rule.pattern or None,
            wildcard=rule.wildcard or None,
            min_size=rule.min_size,
            max_size=rule.max_size,
            newest=now - timedelta(seconds=rule.min_age_seconds) if rule.min_age_seconds is not None else None,
            oldest=now - timedelta(seconds=rule.max_age_seconds) if rule.max_age_seconds is not None else None,
            target_prefix=rule.target_prefix or "",
        )

    def as_values(self) -> tuple[Any, ...]:
        """Plain values for a pipe (times as epoch seconds)."""
        values = astuple(self)
        return tuple(v.timestamp() if isinstance(v, datetime) else v for v in values)

    @classmethod
    def from_values(cls, values: tuple[Any, ...]) -> Selection:
        from datetime import UTC

        pattern, wildcard, min_size, max_size, newest, oldest, target_prefix = values
        return cls(
            pattern,
            wildcard,
            min_size,
            max_size,
            None if newest is None else datetime.fromtimestamp(newest, UTC),
            None if oldest is None else datetime.fromtimestamp(oldest, UTC),
            target_prefix,
        )

    def filter(self) -> Callable[[str, int | None, datetime | None], bool]:
        """The filters as one function of (name, size, modified), built once per listing: only the
        filters set are checked. A file of unknown size or age passes those filters."""
        pattern = re.compile(self.pattern) if self.pattern else None
        wildcard, min_size, max_size, newest, oldest = (
            self.wildcard,
            self.min_size,
            self.max_size,
            self.newest,
            self.oldest,
        )
        if not (
            pattern
            or wildcard
            or min_size is not None
            or max_size is not None
            or newest is not None
            or oldest is not None
        ):
            return lambda name, size, modified: True

        def keeps(name: str, size: int | None, modified: datetime | None) -> bool:
            if pattern is not None and not pattern.search(name):
                return False
            if wildcard and not fnmatch.fnmatchcase(name, wildcard):
                return False
            if size is not None:
                if min_size is not None and size < min_size:
                    return False
                if max_size is not None and size > max_size:
                    return False
            if modified is not None:
                if newest is not None and modified > newest:
                    return False
                if oldest is not None and modified < oldest:
                    return False
            return True

        return keeps

    def target(self, relative: str) -> str:
        """The target of a file at `relative` under the listed directory (InvalidInput if it cannot be one)."""
        return clean_target(posixpath.join(self.target_prefix, relative) if self.target_prefix else relative)
