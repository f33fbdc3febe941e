"""``Tensor.cuda`` on the class, with a depth-1 caller check.

``Tensor.cuda`` lives on the immutable C base ``torch._C.TensorBase``, so the only way to reach
``t.cuda()`` calls that the rewrite tier did not see (modules imported before the shim, modules
without source) is a patch on ``torch.Tensor``. It is applied only when such code exists
(``Runtime.need_tensor_class_patch``). It looks exactly one frame up: deeper walks leak scope
(freezegun #269). Out of scope the cost is one frame lookup and one dict hit; ``Tensor.to`` is
never patched.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import devices as _devices

if TYPE_CHECKING:
    from ..runtime.runtime import Runtime

__all__ = ["patch_tensor_cuda"]


def patch_tensor_cuda(rt: "Runtime") -> None:
    import torch

    original = rt.patches.get_original(torch.Tensor, "cuda")
    scope = rt.scope
    known = scope._cache  # module name -> in scope; filled by Scope.__contains__
    getframe = sys._getframe

    def cuda(self, *args: Any, **kwargs: Any) -> Any:
        if rt.active:
            name = getframe(1).f_globals.get("__name__")
            inside = known.get(name)
            if inside is None:
                inside = name in scope
        else:
            inside = False
        if inside:
            device = args[0] if args else kwargs.pop("device", None)
            if len(args) > 1:
                kwargs.setdefault("non_blocking", args[1])
            target = rt.backend.target
            spec = target.spec(None) if device is None else _devices.translate(device, target, allow_int=True)
            rt.audit.hit(getframe(1), "match", "Tensor.cuda", f"Tensor.to({str(spec)!r})", args, kwargs)
            return self.to(spec, **kwargs)
        return original(self, *args, **kwargs)

    cuda.__name__ = cuda.__qualname__ = "cuda"
    cuda.__doc__ = original.__doc__
    cuda.__wrapped__ = original  # type: ignore[attr-defined]
    cuda.__hpu_shim_redirect__ = "Tensor.cuda"  # type: ignore[attr-defined]
    rt.patches.patch(torch.Tensor, "cuda", cuda)
