"""hpu_shim.compat.releases: the installed release from package metadata, parsed the same way for every
version string PyPI's LMCache releases use."""

from __future__ import annotations

import pytest

from hpu_shim.compat.releases import lmcache_version, parse_version


@pytest.mark.parametrize("text,expected", [
    ("0.3.7", (0, 3, 7)), ("0.3.9.post2", (0, 3, 9)), ("0.3.1.post1", (0, 3, 1)), ("0.5.6", (0, 5, 6)),
    ("0.10.0rc1", (0, 10, 0)), ("0.4", None), ("", None), (None, None), ("dev", None),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_no_lmcache_in_this_interpreter_is_none_not_an_error():
    # The test interpreter has no LMCache on its path (releases live in .envs and are put on PYTHONPATH
    # only for the children that run them).
    assert lmcache_version() is None
