"""``Tensor.cuda`` on the class, with a depth-1 caller check.

``Tensor.cuda`` lives on the immutable C base ``torch._C.TensorBase``, so the only way to reach
``t.cuda()`` calls that the rewrite tier did not see (modules imported before the shim, modules
without source or loaded by another library's loader) is a patch on ``torch.Tensor``. It is applied
only when such code exists (``HookHost.need_tensor_class_patch``). It looks exactly one frame up:
deeper walks leak scope (freezegun #269). Out of scope the cost is one frame lookup and one dict
hit; ``Tensor.to`` is never patched. Depends only on ``protocols.RedirectContext`` and the
patch registry it is given.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import devices as _devices

if TYPE_CHECKING:
    from .patches import PatchRegistry
    from .protocols import RedirectContext

__all__ = ["patch_tensor_cuda"]


def patch_tensor_cuda(ctx: "RedirectContext", patches: "PatchRegistry") -> None:
    import torch

    original = patches.get_original(torch.Tensor, "cuda")
    scope = ctx.scope
    known = scope.decisions  # module name -> in scope; filled by Scope.__contains__
    getframe = sys._getframe

    def cuda(self, *args: Any, **kwargs: Any) -> Any:
        if ctx.active:
            name = getframe(1).f_globals.get("__name__")
            inside = known.get(name)
            if inside is None:
                inside = name in scope
        else:
            inside = False
        if inside:
            spec, to_kwargs = _devices.tensor_cuda_args(args, kwargs, ctx.backend.target)
            ctx.audit.hit(getframe(1), "match", "Tensor.cuda", f"Tensor.to({str(spec)!r})", args, kwargs)
            return self.to(spec, **to_kwargs)
        return original(self, *args, **kwargs)

    cuda.__name__ = cuda.__qualname__ = "cuda"
    cuda.__doc__ = original.__doc__
    cuda.__wrapped__ = original  # type: ignore[attr-defined]
    cuda.__hpu_shim_redirect__ = "Tensor.cuda"  # type: ignore[attr-defined]
    patches.patch(torch.Tensor, "cuda", cuda)
