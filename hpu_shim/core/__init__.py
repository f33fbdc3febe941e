"""The redirect core: what makes ``torch.cuda`` mean the backend device inside the scope only.

``protocols`` defines the narrow interfaces the rest of the core depends on (a leaf module);
``scope`` decides which modules are "inside LMCache"; ``finder`` is the meta-path hook that prepares
each in-scope module before its code runs, whichever loader found it; ``context`` is one redirect
session (proxies, builtins, rewrite helper, the unknown-API and pin-drop policies); ``proxy`` builds
the ``torch``/``torch.cuda`` stand-ins; ``rewrite`` is the source tier
(``.to``/``.cuda``/``device=``/``pin_memory=``); ``devices`` is the one CUDA device translation;
``tensor_patch`` is the class-level ``Tensor.cuda`` fallback; ``patches`` records every change so
``uninstall()`` can undo it exactly. Nothing here imports ``hpu_shim.runtime.runtime``. See
``docs/architecture.md``.
"""
