"""Which LMCache release is installed (package metadata; LMCache is never imported for it), and the
engine-builder call as each release takes it.

Its own module so that the profile table (``compat``) and the connectors it installs
(``native_connector``) both read it without importing each other.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["create_engine", "lmcache_version", "parse_version"]


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


def create_engine(name: str, config: Any, metadata: Any, connector: Any) -> Any:
    """``LMCacheEngineBuilder.get_or_create`` as every release takes it, then ``post_init`` where it exists.

    0.3.4 and later also want ``broadcast_fn`` and ``broadcast_object_fn`` (single process: no-ops);
    0.5.x engines finish their set-up in ``post_init``.
    """
    import inspect

    from lmcache.v1.cache_engine import LMCacheEngineBuilder

    extra: tuple = (lambda t, s: None, lambda o, s: o)
    if len(inspect.signature(LMCacheEngineBuilder.get_or_create).parameters) < 6:
        extra = ()
    engine = LMCacheEngineBuilder.get_or_create(name, config, metadata, connector, *extra)
    if hasattr(engine, "post_init"):
        engine.post_init()
    return engine
