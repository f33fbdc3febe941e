"""Negative control for the vLLM end-to-end test (reached through hpu_shim's sitecustomize chain).

With HPU_SHIM_TEST_CORRUPT=1, every KV block the shim's vLLM-CPU connector writes back into vLLM's
paged cache is replaced by random values, in every vLLM process. If the greedy output still matched,
the test would not be proving that the retrieved KV is what vLLM uses.
"""

import os

if os.environ.get("HPU_SHIM_TEST_CORRUPT") == "1":
    import wrapt

    @wrapt.when_imported("hpu_shim.compat.cpu_connector")
    def _corrupt(module):
        import torch

        original = module.VLLMCPULayer.scatter

        def scatter(self, slots, k, v):
            original(self, slots, torch.randn_like(k.float()).to(k.dtype) * 4, torch.randn_like(v.float()).to(v.dtype) * 4)

        module.VLLMCPULayer.scatter = scatter
