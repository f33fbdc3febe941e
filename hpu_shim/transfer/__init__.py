"""KV transfer kernels: batched gather/scatter between a paged KV cache on the device and LMCache's
memory objects, written for HPU lazy/eager mode and for the CPU backend. Every connector the shim
supplies (``hpu_shim.compat``) moves KV through here. See ``docs/architecture.md``.
"""
