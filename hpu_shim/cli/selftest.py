"""``python -m hpu_shim selftest``: the first check to run on a Gaudi, and the output to attach to a bug report.

It stores, looks up and retrieves KV through the *installed* LMCache's own engine and the GPU
connector LMCache itself builds for vLLM, on the real HPU, in vllm-gaudi's layout (one
``TensorTuple((K, V))`` per layer, each ``[num_blocks, 128, heads, head_dim]``), then checks the
restored slots bit for bit (``torch.equal``) and that every other slot is still zero.  It prints
the execution mode, the bridge and LMCache versions, the device syncs per store and retrieve and
the throughput, and exits 0 only when everything matched.

The round trip runs in a child interpreter started like a Gaudi container with the shim on
(``PYTHONPATH=<bootstrap>``, ``HPU_SHIM=1``, ``HPU_SHIM_BACKEND=hpu``), so the mode flag is read
before the bridge loads and LMCache's threads cannot keep the command alive.  Nothing here needs
``hpu_shim.testing``; ``--emulate`` (or ``HPU_SHIM_FAKE_HPU=1``) runs it on the emulated HPU instead,
which is how the tests run it.  ``--negative-control`` repeats the round trip after overwriting what
LMCache stored: that run must fail, or the whole result is a failure (a check that cannot fail
proves nothing); ``--corrupt`` runs only the corrupted round trip (exit 1 when the check works).

Exit codes: 0 bit-exact; 1 a mismatch, nothing retrieved, or the round trip raised; 2 bad usage or
no usable device / LMCache.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

__all__ = ["main", "register", "run_child"]

BLOCK_SIZE = 128  # vllm-gaudi's kernel block size
EXIT_OK, EXIT_MISMATCH, EXIT_UNUSABLE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("eager", "lazy"), help="set PT_HPU_LAZY_MODE for the run (default: as set)")
    p.add_argument("--emulate", action="store_true", help="run on the emulated HPU (hpu_shim.testing)")
    p.add_argument("--tokens", type=int, default=1024, help="tokens to store and retrieve (default 1024)")
    p.add_argument("--layers", type=int, default=4, help="KV layers (default 4)")
    p.add_argument("--heads", type=int, default=8, help="KV heads (default 8)")
    p.add_argument("--head-dim", type=int, default=128, help="head dim (default 128)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"), help="KV dtype")
    p.add_argument("--chunk-size", type=int, default=256, help="LMCache chunk size (default 256)")
    p.add_argument("--negative-control", action="store_true",
                   help="then repeat with the stored KV corrupted: that run must fail, or the check proves nothing")
    p.add_argument("--corrupt", action="store_true", help="only the corrupted run (exits 1 when the check works)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--timeout", type=float, default=1200, help="seconds before the round trip is abandoned")


def register(sub: Any) -> None:
    """Add the ``selftest`` subcommand to ``python -m hpu_shim``'s subparsers."""
    p = sub.add_parser("selftest", help="store/lookup/retrieve through the installed LMCache on this HPU, "
                                        "bit-exact; attach the output to bug reports")
    add_arguments(p)
    p.set_defaults(func=main_from_args)


# ---- parent: start the child like a Gaudi container, print the report ------------------------------------
def _child_env(args: argparse.Namespace) -> dict:
    from ..runtime.runtime import bootstrap_dir

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([bootstrap_dir(), root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HPU_SHIM="1", HPU_SHIM_BACKEND="hpu", LMCACHE_TRACK_USAGE="false")
    env.setdefault("PYTHONHASHSEED", "0")
    if args.mode:
        env["PT_HPU_LAZY_MODE"] = "1" if args.mode == "lazy" else "0"
    if args.emulate:
        env["HPU_SHIM_FAKE_HPU"] = "1"
    return env


def main_from_args(args: argparse.Namespace) -> int:
    for name in ("tokens", "layers", "heads", "head_dim", "chunk_size"):
        if getattr(args, name) <= 0:
            print(f"hpu_shim selftest: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}",
                  file=sys.stderr)
            return EXIT_UNUSABLE
    with tempfile.TemporaryDirectory(prefix="hpu-shim-selftest-") as tmp:
        out = os.path.join(tmp, "result.json")
        spec = {k: v for k, v in vars(args).items() if k != "func"}
        cmd = [sys.executable, "-m", "hpu_shim.cli.selftest", "--child", out, json.dumps(spec)]
        try:
            proc = subprocess.run(cmd, env=_child_env(args), capture_output=True, text=True,
                                  timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            print(f"hpu_shim selftest: the round trip did not finish within {args.timeout:.0f} s", file=sys.stderr)
            return EXIT_MISMATCH
        result = None
        if os.path.exists(out):
            with open(out, encoding="utf-8") as fh:
                result = json.load(fh)
    if result is None:
        tail = "\n".join((proc.stderr or proc.stdout or "no output").strip().splitlines()[-15:])
        print(f"hpu_shim selftest: the round trip crashed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        return EXIT_MISMATCH
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    print(render(result))
    return result["exit_code"]


def render(r: dict) -> str:
    lines = ["hpu_shim selftest: LMCache store -> lookup -> retrieve on " + r.get("device", "?")]
    for key in ("verdict", "mode", "bridge", "torch", "lmcache", "connector", "layout"):
        if r.get(key) is not None:
            lines.append(f"  {key:<10} {r[key]}")
    if "stored" in r:
        lines.append(f"  tokens     stored {r['stored']}, hit {r['hit']}, retrieved {r['retrieved']}")
        lines.append(f"  bit-exact  {r['bit_exact']}  (restored slots: torch.equal per layer, K and V)")
        lines.append(f"  elsewhere  {'untouched' if r['untouched_elsewhere'] else 'WRITTEN'}  (every other slot still 0)")
        for phase in ("store", "retrieve"):
            s = r[phase]
            lines.append(f"  {phase:<10} {s['mark_step']} mark_step, {s['synchronize']} synchronize, "
                         f"{s['seconds'] * 1e3:.1f} ms, {s['gb_per_s']:.3f} GB/s ({s['bytes']} bytes of KV)")
        for phase in ("store", "retrieve"):
            counts = {k[len(phase) + 1:]: v for k, v in (r.get("emulator_counts") or {}).items()
                      if k.startswith(phase + "_") and v}
            if counts:
                lines.append(f"  emulated   {phase}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    control = r.get("negative_control")
    if control:
        lines.append(f"  control    corrupted {control['corrupted_objects']} stored objects -> {control['verdict']}")
    if r.get("error"):
        lines.append(f"  error      {r['error']}")
    return "\n".join(lines)


# ---- child: the round trip --------------------------------------------------------------------------------
class SyncCounter:
    """Counts ``mark_step`` and ``torch.hpu.synchronize`` by wrapping them where LMCache looks them up."""

    _installed: SyncCounter | None = None

    @classmethod
    def install(cls) -> SyncCounter:
        if cls._installed is None:
            cls._installed = cls()
        return cls._installed

    def __init__(self) -> None:
        import habana_frameworks.torch.core as htcore
        import torch

        self.counts = {"mark_step": 0, "synchronize": 0}
        for owner, attr, key in ((htcore, "mark_step", "mark_step"), (torch.hpu, "synchronize", "synchronize")):
            original = getattr(owner, attr)

            def counted(*a, _original=original, _key=key, **kw):
                self.counts[_key] += 1
                return _original(*a, **kw)

            setattr(owner, attr, counted)

    def snapshot(self) -> dict:
        return dict(self.counts)


def _probe_device(emulated: bool) -> None:
    """Before LMCache is imported (the shim would refuse to start without an HPU): is there one?"""
    import torch

    if emulated:
        import hpu_shim.testing as emu  # only when the user asked for the emulator

        emu.install_emulator()
    if getattr(torch, "hpu", None) is None:
        try:
            import habana_frameworks.torch  # noqa: F401  (bridges before 1.18 register torch.hpu here)
        except ImportError:
            raise Unusable("torch.hpu does not exist and habana_frameworks is not installed: this is not a "
                           "Gaudi environment; install the Gaudi PyTorch bridge, or pass --emulate") from None
    if not torch.hpu.is_available():
        raise Unusable("torch.hpu.is_available() is False: no Gaudi device is visible to this process "
                       "(check hl-smi and HABANA_VISIBLE_MODULES), or pass --emulate")


def _versions(emulated: bool) -> dict:
    from importlib import metadata

    import torch

    def dist(*names: str) -> str | None:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    if emulated:
        import hpu_shim.testing as emu

        handle = emu.install_emulator()
        bridge = f"emulated HPU (hpu_shim.testing, profile {handle.profile}, bridge v1.19.0 semantics)"
    else:
        bridge = dist("habana-torch-plugin", "habana_torch_plugin") or "habana_frameworks (version unknown)"
    import lmcache

    lm = dist("lmcache") or getattr(lmcache, "__version__", None) or f"unknown ({os.path.dirname(lmcache.__file__)})"
    from habana_frameworks.torch.utils.internal import is_lazy

    return {"bridge": bridge, "torch": torch.__version__, "lmcache": lm,
            "mode": "lazy (PT_HPU_LAZY_MODE=1)" if is_lazy() else "eager (PT_HPU_LAZY_MODE=0)"}


def _engine(spec: dict, dtype: Any, device: Any):
    """LMCache's engine and the connector LMCache builds for vLLM (``CreateGPUConnector``, or 0.3.x's adapter)."""
    import inspect

    from lmcache.v1.config import LMCacheEngineConfig

    from ..compat.releases import create_engine

    config = LMCacheEngineConfig.from_defaults(chunk_size=spec["chunk_size"], local_cpu=True, max_local_cpu_size=1.0)
    shape = (spec["layers"], 2, spec["chunk_size"], spec["heads"], spec["head_dim"])
    try:
        from lmcache.v1.metadata import LMCacheMetadata
    except ImportError:
        from lmcache.config import LMCacheEngineMetadata

        metadata = LMCacheEngineMetadata("hpu-shim-selftest", 1, 0, "vllm", dtype, shape)
    else:
        params = inspect.signature(LMCacheMetadata).parameters
        kwargs = {"model_name": "hpu-shim-selftest", "world_size": 1, "local_world_size": 1, "worker_id": 0,
                  "local_worker_id": 0, "kv_dtype": dtype, "kv_shape": shape, "use_mla": False,
                  "chunk_size": spec["chunk_size"]}
        metadata = LMCacheMetadata(**{k: v for k, v in kwargs.items() if k in params})
    import lmcache.v1.gpu_connector as gc

    create = getattr(gc, "CreateGPUConnector", None)
    if create is not None:
        try:
            from lmcache.utils import EngineType
        except ImportError:
            connector = create(config, metadata, "vllm")
        else:
            connector = create(config, metadata, EngineType.VLLM)
    else:
        connector = gc.VLLMPagedMemGPUConnectorV2(spec["heads"] * spec["head_dim"], spec["layers"], use_gpu=True,
                                                  chunk_size=spec["chunk_size"], dtype=dtype, device=device)
    name = f"hpu-shim-selftest-{os.getpid()}"
    engine = create_engine(name, config, metadata, connector)
    return engine, connector, name


def _corrupt(engine: Any) -> int:
    """Negative control: overwrite every memory object LMCache's local CPU backend holds."""
    import torch

    manager = getattr(engine, "storage_manager", None)
    backends = getattr(manager, "storage_backends", None) or getattr(manager, "backends", None) or {}
    seen = 0
    for backend in (backends.values() if isinstance(backends, dict) else backends):
        for obj in list((getattr(backend, "hot_cache", None) or {}).values()):
            obj.tensor.copy_(torch.full_like(obj.tensor, 7))
            seen += 1
    if not seen:
        raise RuntimeError("--corrupt found no stored memory objects in LMCache's local CPU backend")
    return seen


class Unusable(RuntimeError):
    """No device or no LMCache to test: a setup problem, not a mismatch (exit 2)."""


def round_trip(spec: dict) -> dict:
    """Everything the report needs; raises ``Unusable`` for setup errors (no HPU, no LMCache)."""
    emulated = bool(spec.get("emulate")) or os.environ.get("HPU_SHIM_FAKE_HPU") == "1"
    _probe_device(emulated)
    try:
        versions = _versions(emulated)
    except ImportError as exc:
        raise Unusable(f"{exc}: install LMCache (pip install lmcache) next to the Gaudi PyTorch bridge") from exc
    import torch

    from ..compat.connector import TensorTuple  # vllm-gaudi's per-layer container

    counter = SyncCounter.install()
    device = torch.device("hpu")
    dtype = getattr(torch, spec["dtype"])
    layers, heads, head_dim, tokens = spec["layers"], spec["heads"], spec["head_dim"], spec["tokens"]
    num_blocks = -(-tokens // BLOCK_SIZE) * 2  # room for as many empty slots as used ones
    gen = torch.Generator().manual_seed(0)
    engine, connector, name = _engine(spec, dtype, device)
    result: dict = {**versions, "device": f"{torch.hpu.get_device_name()} ({device})",
                    "connector": f"{type(connector).__module__}.{type(connector).__name__}",
                    "layout": f"{layers} x TensorTuple((K, V)), each [{num_blocks}, {BLOCK_SIZE}, {heads}, "
                              f"{head_dim}] {spec['dtype']}"}
    try:
        kv = [TensorTuple((torch.randn(num_blocks, BLOCK_SIZE, heads, head_dim, generator=gen).to(dtype).to(device),
                           torch.randn(num_blocks, BLOCK_SIZE, heads, head_dim, generator=gen).to(dtype).to(device)))
              for _ in range(layers)]
        slots_host = torch.randperm(num_blocks * BLOCK_SIZE, generator=gen)[:tokens]
        slots = slots_host.to(device)
        ids = torch.randint(0, 32000, (tokens,), generator=gen)
        reference = [tuple(t.view(num_blocks * BLOCK_SIZE, -1).cpu() for t in layer) for layer in kv]
        kv_bytes = tokens * layers * 2 * heads * head_dim * torch.tensor([], dtype=dtype).element_size()
        emu = importlib.import_module("hpu_shim.testing") if emulated else None
        phases = {}
        before, start = counter.snapshot(), time.perf_counter()
        with (emu.count() if emu else _Null()) as c_store:
            engine.store(ids, kvcaches=kv, slot_mapping=slots)
            torch.hpu.synchronize()
        phases["store"] = _phase(counter, before, start, kv_bytes)
        hit = 0
        for _ in range(500):  # some releases put to the backend asynchronously
            hit = engine.lookup(ids)
            if hit >= (tokens // spec["chunk_size"]) * spec["chunk_size"] and hit:
                break
            time.sleep(0.01)
        for layer in kv:
            for t in layer:
                t.zero_()
        if spec.get("corrupt"):
            result["corrupted_objects"] = _corrupt(engine)
        before, start = counter.snapshot(), time.perf_counter()
        with (emu.count() if emu else _Null()) as c_retrieve:
            ret = engine.retrieve(ids, kvcaches=kv, slot_mapping=slots)
            torch.hpu.synchronize()
        phases["retrieve"] = _phase(counter, before, start, kv_bytes)
        retrieved = int(ret.sum())
        got = [tuple(t.view(num_blocks * BLOCK_SIZE, -1).cpu() for t in layer) for layer in kv]
        mask = torch.zeros(num_blocks * BLOCK_SIZE, dtype=torch.bool)
        mask[slots_host[:retrieved]] = True
        bit_exact = retrieved > 0 and all(torch.equal(g[mask], r[mask]) for gl, rl in zip(got, reference)
                                          for g, r in zip(gl, rl))
        untouched = all(bool((g[~mask] == 0).all()) for gl in got for g in gl)
        result.update(phases, stored=tokens, hit=hit, retrieved=retrieved, bit_exact=bit_exact,
                      untouched_elsewhere=untouched)
        if emu:
            result["emulator_counts"] = {"store_" + k: v for k, v in c_store.as_dict().items()}
            result["emulator_counts"].update({"retrieve_" + k: v for k, v in c_retrieve.as_dict().items()})
    finally:
        from lmcache.v1.cache_engine import LMCacheEngineBuilder

        LMCacheEngineBuilder.destroy(name)
    ok = result["bit_exact"] and result["untouched_elsewhere"] and result["retrieved"] == tokens
    result["verdict"] = "PASS: bit-exact, nothing written elsewhere" if ok else "FAIL: " + (
        "restored KV differs" if not result["bit_exact"] else
        "slots outside the request were written" if not result["untouched_elsewhere"] else
        f"only {result['retrieved']} of {tokens} tokens retrieved")
    result["exit_code"] = EXIT_OK if ok else EXIT_MISMATCH
    return result


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> bool:
        return False


def _phase(counter: SyncCounter, before: dict, start: float, nbytes: int) -> dict:
    seconds = time.perf_counter() - start
    now = counter.snapshot()
    return {"mark_step": now["mark_step"] - before["mark_step"],
            "synchronize": now["synchronize"] - before["synchronize"] - 1,  # minus our own, for the timing
            "seconds": seconds, "bytes": nbytes, "gb_per_s": nbytes / seconds / 1e9 if seconds else 0.0}


def run_child(out: str, spec: dict) -> None:
    try:
        result = round_trip(spec)
        if spec.get("negative_control") and result["exit_code"] == EXIT_OK:
            control = round_trip(dict(spec, corrupt=True))
            result["negative_control"] = {k: control.get(k) for k in ("verdict", "bit_exact", "corrupted_objects")}
            if control["exit_code"] != EXIT_MISMATCH:
                result.update(exit_code=EXIT_MISMATCH,
                              verdict="FAIL: the negative control passed, so the check cannot see corrupted KV")
    except Unusable as exc:
        result = {"error": str(exc), "verdict": "UNUSABLE: nothing to test", "exit_code": EXIT_UNUSABLE}
    except BaseException as exc:  # noqa: BLE001 - report everything, the exit code says it failed
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:],
                  "verdict": "FAIL: the round trip raised", "exit_code": EXIT_MISMATCH}
    result["imported_hpu_shim_testing"] = "hpu_shim.testing" in sys.modules  # must stay False on a real Gaudi
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, default=str)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # LMCache may leave non-daemon threads behind


def main(argv: list[str] | None = None) -> int:
    """``python -m hpu_shim.cli.selftest [options]`` (same options as ``python -m hpu_shim selftest``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(argv[1], json.loads(argv[2]))
    parser = argparse.ArgumentParser(prog="python -m hpu_shim selftest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
