from datetime import UTC, datetime

import pytest

from catalog.errors import InvalidInput
from catalog.paths import clean_target, render_directory


@pytest.mark.parametrize("bad", ["", " ", "/etc/passwd", "../x", "a/../../x", "a/./b", "a\\b", "a\x00b"])
def test_bad_targets_are_refused_with_a_reason(bad):
    with pytest.raises(InvalidInput, match="target path"):
        clean_target(bad)


def test_targets_are_normalised():
    assert clean_target("a//b/c.grib") == "a/b/c.grib"
    assert clean_target("dir/") == "dir"


def test_directory_templates_expand_tokens_and_dates():
    when = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    out = render_directory("in/$destination/$date{%Y/%m}/$stream", {"destination": "site1", "stream": "oper"}, when)
    assert out == "in/site1/2026/11/oper"
    assert render_directory("$date", {}, when) == "20261123"


def test_unknown_tokens_are_an_error_not_a_directory():
    with pytest.raises(InvalidInput, match=r"\$destnation"):
        render_directory("$destnation", {"destination": "x"}, datetime.now(UTC))
