"""Negative control for the vLLM end-to-end test (reached through hpu_shim's sitecustomize chain).

With HPU_SHIM_TEST_CORRUPT=1, every KV chunk the shim's connectors write back into vLLM's paged
cache is replaced by random values, in every vLLM process (the hook wraps ``hpu_shim.transfer.retrieve``,
which every shim connector calls at call time). If the greedy output still matched, the test would
not be proving that the retrieved KV is what vLLM uses.
"""

import os

if os.environ.get("HPU_SHIM_TEST_CORRUPT") == "1":
    import wrapt

    @wrapt.when_imported("hpu_shim.transfer")
    def _corrupt(module):
        import torch

        original = module.retrieve

        def retrieve(cache, srcs, *args, **kwargs):
            noise = [(torch.randn_like(s.float()) * 4).to(s.dtype) if s is not None else s for s in srcs]
            return original(cache, noise, *args, **kwargs)

        module.retrieve = retrieve
