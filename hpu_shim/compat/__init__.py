"""Per-LMCache-release compatibility: what each release needs beyond the generic redirect.

A *profile* is chosen from the installed LMCache version (read from package metadata, never by
importing LMCache) and may add rows over the redirect table (``overlay``) and module stand-ins
(``module_overrides``, e.g. ``lmcache.c_ops``). Profiles are declared in ``PROFILES``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["Profile", "PROFILES", "activate", "lmcache_version"]


@dataclasses.dataclass
class Profile:
    name: str
    overlay: dict = dataclasses.field(default_factory=dict)
    #: module name -> fills a fresh module object with a stand-in (e.g. torch-native lmcache.c_ops)
    module_overrides: dict[str, Callable[[Any], None]] = dataclasses.field(default_factory=dict)
    #: module name -> fix-up run right after that in-scope module executed (patches go through rt.patches)
    post_exec: dict[str, Callable[[Any, Any], None]] = dataclasses.field(default_factory=dict)

    def deactivate(self, rt: Any) -> None:
        pass


def lmcache_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("lmcache")
    except PackageNotFoundError:
        return None


def _generic(version: str | None) -> Profile:
    return Profile(name=f"lmcache {version}" if version else "generic")


#: (predicate on the version string, profile factory), first match wins.
PROFILES: list[tuple[Callable[[str | None], bool], Callable[[str | None], Profile]]] = [
    (lambda v: True, _generic),
]


def activate(rt: Any) -> Profile | None:
    if "lmcache" not in rt.scope.packages:
        return None
    version = lmcache_version()
    for matches, factory in PROFILES:
        if matches(version):
            profile = factory(version)
            rt.overlay = dict(profile.overlay)
            rt.module_overrides = dict(profile.module_overrides)
            return profile
    return None
