"""A toy KV offloader written the way CUDA-era LMCache was: torch.cuda streams, `.cuda()`,
`device="cuda"`, pinned host buffers and `torch.cuda.synchronize()`. It knows nothing about HPU;
`python -m hpu_shim demo` runs it unmodified on the emulated HPU through the shim."""

import torch

if torch.cuda.is_available():  # decided at import time, like `import lmcache.c_ops`
    DEVICE = torch.device(f"cuda:{torch.cuda.current_device()}")
else:
    raise ImportError("kvdemo needs CUDA")


class Offloader:
    def __init__(self, num_blocks=64, block_size=128, heads=8, head_dim=64, dtype=torch.bfloat16):
        torch.cuda.set_device(DEVICE.index or 0)
        self.block_size = block_size
        self.kv = torch.randn(2, num_blocks * block_size, heads * head_dim).to(dtype).to("cuda")
        self.host = torch.empty(0, dtype=dtype, pin_memory=True)
        self.stream = torch.cuda.Stream(priority=-1)
        self.props = torch.cuda.get_device_properties(0)

    def store(self, slots):
        slots = slots.cuda()
        with torch.cuda.stream(self.stream):
            self.host = self.kv.index_select(1, slots).cpu()
        self.stream.synchronize()
        return self.host

    def wipe(self):
        self.kv.zero_()
        torch.cuda.synchronize(DEVICE)
        torch.cuda.empty_cache()

    def retrieve(self, slots):
        dev_slots = slots.to(DEVICE)
        self.kv.index_copy_(1, dev_slots, self.host.to("cuda", non_blocking=True))
        torch.cuda.synchronize()
        return self.kv
