"""Which modules are "inside LMCache": exact name or dot-prefix match, cached per module name.

``lmcache`` matches ``lmcache`` and ``lmcache.v1.x`` but never ``lmcache_vllm``: a bare
``startswith`` would leak the redirect into neighbouring packages (freezegun #269 style bugs).
The decision is cached because the ``Tensor.cuda`` patch asks it on every call; the cache is
public (``decisions``, read-only for callers) so that hot path can read it without a method call.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["Scope"]


class Scope:
    __slots__ = ("packages", "decisions")

    def __init__(self, packages: Iterable[str]):
        self.packages: tuple[str, ...] = tuple(packages)
        #: module name -> in scope (filled by ``__contains__``; callers only read it)
        self.decisions: dict[str, bool] = {}

    def __contains__(self, module_name: object) -> bool:
        try:
            return self.decisions[module_name]  # type: ignore[index]
        except KeyError:
            pass
        except TypeError:  # unhashable __name__ (pathological globals)
            return False
        result = isinstance(module_name, str) and any(
            module_name == pkg or module_name.startswith(pkg + ".") for pkg in self.packages
        )
        if len(self.decisions) < 65536:
            self.decisions[module_name] = result  # type: ignore[index]
        return result

    def __repr__(self) -> str:
        return f"Scope({', '.join(self.packages)})"
