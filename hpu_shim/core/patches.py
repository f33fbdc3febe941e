"""Saved originals and the undo log: what makes every patch reversible and observable.

Modelled on gevent's ``monkey.saved``: the *first* original always wins, so patching twice can
never record a patched value as the original. Attributes that were inherited (``Tensor.cuda``
lives on ``torch._C.TensorBase``) are deleted on restore rather than shadowed, so after
``uninstall()`` ``"cuda" not in torch.Tensor.__dict__`` again.
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

    def patch(self, owner: Any, name: str, replacement: Any) -> None:
        with self._lock:
            key = (id(owner), name)
            if key in self._saved:
                original = self._saved[key][2]  # first original wins
            else:
                original = owner.__dict__.get(name, MISSING) if hasattr(owner, "__dict__") else MISSING
            setattr(owner, name, replacement)
            self._saved[key] = (owner, name, original, replacement)

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
