"""In-memory stub of the ``habana_frameworks`` package (docs/gaudi-semantics.md "torch.hpu API", "Execution modes").

Only the surface LMCache/vLLM-on-Gaudi touch: ``habana_frameworks.torch.core``
(``mark_step``, ``iter_mark_step``, ``add_step_closure``), ``habana_frameworks.torch.hpu``
(the same object as ``torch.hpu``) and ``habana_frameworks.torch.utils.internal.is_lazy``.
Modules live only in ``sys.modules`` (no files), so both ``import habana_frameworks.torch
as htorch`` and ``import habana_frameworks.torch.core as htcore`` resolve.

A real ``habana_frameworks`` on disk means real hardware may be present: we refuse to
shadow it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

from . import _lazy

ROOT = "habana_frameworks"


class RealHabanaFrameworksError(RuntimeError):
    """A real habana_frameworks is importable; the emulator must not shadow it."""


def _is_ours(mod) -> bool:
    return getattr(mod, "__hpu_shim_emulated__", False)


def refuse_if_real() -> None:
    existing = sys.modules.get(ROOT)
    if existing is not None:
        if _is_ours(existing):
            return
        raise RealHabanaFrameworksError(
            f"habana_frameworks is already imported from {getattr(existing, '__file__', existing)!r}; "
            "refusing to install the HPU emulator over a real Intel Gaudi stack"
        )
    spec = importlib.util.find_spec(ROOT)
    if spec is not None:
        where = spec.origin or list(spec.submodule_search_locations or [])
        raise RealHabanaFrameworksError(
            f"a real habana_frameworks is importable ({where}); refusing to install the HPU "
            "emulator over a real Intel Gaudi stack (unset HPU_SHIM_FAKE_HPU)"
        )


def _module(name: str, doc: str, package: bool = True, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=package)
    if package:
        mod.__path__ = []  # a package with nothing on disk: submodules come from sys.modules
        mod.__spec__.submodule_search_locations = []
    mod.__package__ = name if package else name.rpartition(".")[0]
    mod.__hpu_shim_emulated__ = True
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def build(torch_hpu: types.ModuleType) -> dict[str, types.ModuleType]:
    internal = _module(f"{ROOT}.torch.utils.internal", "is_lazy() (docs/gaudi-semantics.md, Execution modes)", package=False,
                       is_lazy=_lazy.is_lazy)
    utils = _module(f"{ROOT}.torch.utils", "emulated", internal=internal)
    core = _module(
        f"{ROOT}.torch.core", "mark_step & friends, lazy mode only (docs/gaudi-semantics.md, Execution modes)",
        mark_step=_lazy.mark_step, iter_mark_step=_lazy.iter_mark_step,
        add_step_closure=_lazy.add_step_closure, is_lazy=_lazy.is_lazy,
    )
    torch_pkg = _module(f"{ROOT}.torch", "emulated habana_frameworks.torch",
                        core=core, hpu=torch_hpu, utils=utils)
    root = _module(ROOT, "emulated habana_frameworks (hpu_shim.testing)", torch=torch_pkg, is_loaded=True)
    return {
        ROOT: root,
        f"{ROOT}.torch": torch_pkg,
        f"{ROOT}.torch.core": core,
        f"{ROOT}.torch.hpu": torch_hpu,
        f"{ROOT}.torch.utils": utils,
        f"{ROOT}.torch.utils.internal": internal,
    }


def install(torch_hpu: types.ModuleType) -> None:
    sys.modules.update(build(torch_hpu))
