"""The redirect core: what makes ``torch.cuda`` mean the backend device inside the scope only.

``scope`` decides which modules are "inside LMCache"; ``finder`` is the meta-path hook that prepares
each in-scope module before its code runs (own ``__builtins__``/``__import__``, rewritten bytecode);
``rewrite`` is the source tier (``.to``/``.cuda``/``device=``/``pin_memory=``); ``proxy`` builds the
``torch``/``torch.cuda`` stand-ins those modules see; ``devices`` translates CUDA device specs;
``tensor_patch`` is the class-level ``Tensor.cuda`` fallback; ``patches`` records every change so
``uninstall()`` can undo it exactly. See ``docs/architecture.md``.
"""
