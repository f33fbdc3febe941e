"""Which LMCache release is installed, read from package metadata (LMCache is never imported for it).

Its own module so that the profile table (``compat``) and the connectors it installs
(``native_connector``) both read it without importing each other.
"""

from __future__ import annotations

import re

__all__ = ["lmcache_version", "parse_version"]


def lmcache_version() -> str | None:
    """The installed LMCache's version string, or None when LMCache is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmcache")
    except PackageNotFoundError:
        return None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"0.3.9.post2"`` -> ``(0, 3, 9)``; None for anything without three numeric parts."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else None
