"""Saved originals and the undo log: what makes every patch reversible and observable.

Modelled on gevent's ``monkey.saved``: the *first* original always wins, so patching twice can
never record a patched value as the original. Attributes that were inherited (``Tensor.cuda``
lives on ``torch._C.TensorBase``) are deleted on restore rather than shadowed, so after
``uninstall()`` ``"cuda" not in torch.Tensor.__dict__`` again. ``checkpoint()``/``rollback()``
undo just the patches made since a point, so a compat fix-up that raises half-way leaves nothing
behind.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["PatchRegistry", "UndoLog", "MISSING"]

MISSING = object()


def _qualname(owner: Any) -> str:
    module = getattr(owner, "__module__", None)
    name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    if isinstance(owner, type) and module and module != "builtins":
        return f"{module}.{name}"
    return str(name)


class PatchRegistry:
    """Attribute patches on shared objects (classes, modules), keyed by (owner, name)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # key -> (owner, name, original or MISSING if inherited/absent, replacement)
        self._saved: dict[tuple[int, str], tuple[Any, str, Any, Any]] = {}
        # every patch() in order: (key, the entry it replaced or None), for rollback()
        self._journal: list[tuple[tuple[int, str], Any]] = []

    def patch(self, owner: Any, name: str, replacement: Any) -> None:
        with self._lock:
            key = (id(owner), name)
            previous = self._saved.get(key)
            original = previous[2] if previous is not None else (  # first original wins
                owner.__dict__.get(name, MISSING) if hasattr(owner, "__dict__") else MISSING)
            setattr(owner, name, replacement)
            self._saved[key] = (owner, name, original, replacement)
            self._journal.append((key, previous))

    def checkpoint(self) -> int:
        return len(self._journal)

    def rollback(self, mark: int) -> list[str]:
        """Undo the patches made since ``checkpoint()`` returned ``mark``, newest first."""
        with self._lock:
            undone = []
            while len(self._journal) > mark:
                key, previous = self._journal.pop()
                owner, name, original, _ = self._saved.pop(key)
                if previous is not None:  # back to the earlier patch
                    setattr(owner, name, previous[3])
                    self._saved[key] = previous
                elif original is MISSING:
                    if name in owner.__dict__:
                        delattr(owner, name)
                else:
                    setattr(owner, name, original)
                undone.append(f"{_qualname(owner)}.{name}")
            return undone

    def get_original(self, owner: Any, name: str) -> Any:
        entry = self._saved.get((id(owner), name))
        if entry is None:
            return getattr(owner, name)
        return entry[2] if entry[2] is not MISSING else getattr(owner.__mro__[1], name)

    def is_patched(self, owner: Any, name: str) -> bool:
        return (id(owner), name) in self._saved

    def restore_all(self) -> list[str]:
        with self._lock:
            restored = []
            for owner, name, original, _ in reversed(list(self._saved.values())):
                if original is MISSING:
                    if name in owner.__dict__:
                        delattr(owner, name)
                else:
                    setattr(owner, name, original)
                restored.append(f"{_qualname(owner)}.{name}")
            self._saved.clear()
            self._journal.clear()
            return restored

    def describe(self) -> list[str]:
        return [
            f"{_qualname(owner)}.{name}" + (" (inherited)" if original is MISSING else "")
            for owner, name, original, _ in self._saved.values()
        ]


class UndoLog:
    """Changes to module globals (retrofit, builtins injection), replayed in reverse on uninstall."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[dict, str, Any, str]] = []

    def set_item(self, namespace: dict, key: str, value: Any, label: str) -> None:
        with self._lock:
            self._entries.append((namespace, key, namespace.get(key, MISSING), label))
            namespace[key] = value

    def replay(self) -> int:
        with self._lock:
            entries, self._entries = self._entries, []
        for namespace, key, old, _ in reversed(entries):
            if old is MISSING:
                namespace.pop(key, None)
            else:
                namespace[key] = old
        return len(entries)

    def labels(self) -> list[str]:
        return [label for *_, label in self._entries]
