"""``make hetero``: two real vLLM instances share one LMCache server; the decode one skips prefill.

    python -m hpu_shim.testing.hetero_vllm [--prompt-tokens 4096] [--max-tokens 16] [--json bench-out/hetero.json]

The deployment of ``docs/hetero.md`` on one machine, with vLLM's CPU build standing in for both nodes:

1. LMCache's own server (``python -m lmcache.v1.server 127.0.0.1 PORT cpu``, LMCache 0.5.6) on loopback.
2. *Prefill instance*: vLLM (cpu backend, LMCache ``kv_both``, ``remote_url: lm://...``, no local CPU
   tier) serves a ~4K-token prompt once -- its KV goes to the server -- then serves it again: with
   prefix caching off and no local tier, that hit proves every chunk is readable from the server.
3. *Decode instance*: a fresh vLLM through ``python -m hpu_shim run`` with the same LMCache config.
   Its *first* request is that prompt: LMCache finds the prefix on the server, so vLLM computes only
   the tail. Its greedy output must equal the baseline's, token for token.
4. *Baseline*: a fresh vLLM without LMCache serves the same first request (a cold prefill).

TTFT is vLLM's own ``first_token_latency`` of that first request (decode vs baseline), also the wall
time of the request. Every vLLM process carries a marker in its environment; none may outlive its
run (checked, and killed if one does). Exit code 0 only if the decode instance hit, its output is
the baseline's, and nothing survived. The model is ``tiny_llama``'s ``prefill`` size (random weights,
made offline). Heavy (three vLLM runs): run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid

from .hetero_run import ROOT, release_path
from .results import run_child

__all__ = ["main", "child", "survivors"]

MARKER = "HPU_SHIM_HETERO_RUN"


def child(spec: dict) -> dict:
    """One vLLM instance: the requests of ``spec`` in order; kills its EngineCore/workers before returning."""
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig

    from .tiny_llama import prompt
    from .vllm_e2e import kill_children

    out: dict = {"role": spec["role"]}
    try:
        kwargs = dict(model=spec["model"], enforce_eager=True, enable_prefix_caching=False, dtype="bfloat16",
                      seed=0, max_model_len=spec["max_model_len"], max_num_batched_tokens=spec["max_model_len"],
                      disable_log_stats=False)
        if spec["lmcache"]:
            kwargs["kv_transfer_config"] = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both")
        t0 = time.perf_counter()
        llm = LLM(**kwargs)
        out["llm_init_s"] = time.perf_counter() - t0
        vocab = llm.get_tokenizer().vocab_size
        text = prompt(spec["prompt_tokens"], vocab=vocab, seed=spec.get("prompt_seed", 1))
        params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"], ignore_eos=True)
        out["requests"] = []
        for _ in range(spec["rounds"]):
            t0 = time.perf_counter()
            result = llm.generate([text], params, use_tqdm=False)[0]
            stats = result.metrics
            out["requests"].append({
                "seconds": time.perf_counter() - t0, "prompt_tokens": len(result.prompt_token_ids),
                "num_cached_tokens": result.num_cached_tokens, "output": list(result.outputs[0].token_ids),
                "ttft_s": getattr(stats, "first_token_latency", None) or None})
    except BaseException as exc:  # reported to the parent
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        out["killed_children"] = kill_children()
    return out


def survivors(marker: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _env(marker: str, lmcache_url: str | None, release: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPU_SHIM", "LMCACHE_")) and k != "PYTHONPATH"}
    env.update({MARKER: marker, "PYTHONPATH": os.pathsep.join([release, ROOT]), "HF_HUB_OFFLINE": "1",
                "VLLM_CPU_KVCACHE_SPACE": "2", "PYTHONHASHSEED": "0", "LMCACHE_TRACK_USAGE": "false",
                "HPU_SHIM_BACKEND": "cpu"})
    if lmcache_url:
        env.update(LMCACHE_CHUNK_SIZE="256", LMCACHE_LOCAL_CPU="False", LMCACHE_MAX_LOCAL_CPU_SIZE="2",
                   LMCACHE_REMOTE_URL=lmcache_url, LMCACHE_REMOTE_SERDE="naive")
    return env


def _instance(role: str, spec: dict, env: dict, through_launcher: bool, timeout: float) -> dict:
    """Run one instance in a fresh interpreter: through ``python -m hpu_shim run`` or with the shim's
    variables set directly (``HPU_SHIM=1`` + the bootstrap first on ``PYTHONPATH``: the same thing)."""
    from ..runtime.environment import with_bootstrap

    cmd = [sys.executable, "-m", "hpu_shim.testing.hetero_vllm", "child", json.dumps({**spec, "role": role})]
    if through_launcher:
        cmd = [sys.executable, "-m", "hpu_shim", "run", "--", *cmd]
    elif spec["lmcache"]:
        env = {**env, "HPU_SHIM": "1", "PYTHONPATH": with_bootstrap(env["PYTHONPATH"])}
    started = time.perf_counter()
    result = run_child(cmd, env=env, timeout=timeout)
    got = result.results[-1] if result.results else {"role": role, "error": "no result\n" + result.diagnostics()}
    got["process_s"] = time.perf_counter() - started
    if "error" in got:
        got["log_tail"] = result.stderr[-4000:]
    return got


def run(model: str, prompt_tokens: int, max_tokens: int, envs: str, workdir: str, timeout: float = 1800) -> dict:
    from .hetero_servers import lmcache_server

    release = release_path("0.5.6", envs)
    marker = uuid.uuid4().hex
    spec = {"model": model, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
            "max_model_len": max(2 * prompt_tokens, prompt_tokens + max_tokens + 64)}
    report: dict = {"prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "model": model}
    server = lmcache_server(release, workdir)
    try:
        report["server"] = server.url
        report["prefill"] = _instance("prefill", {**spec, "lmcache": True, "rounds": 2},
                                      _env(marker, server.url, release), False, timeout)
        report["decode"] = _instance("decode", {**spec, "lmcache": True, "rounds": 1},
                                     _env(marker, server.url, release), True, timeout)
        report["baseline"] = _instance("baseline", {**spec, "lmcache": False, "rounds": 1},
                                       _env(marker, None, release), False, timeout)
        report["server_alive_after"] = server.alive()
    finally:
        server.stop()
        left = survivors(marker)
        for proc in left:
            proc.kill()
        report["survivors"] = [p.pid for p in left]
    return report


def verdict(report: dict) -> list[str]:
    """What failed (empty: the run shows what ``docs/hetero.md`` claims)."""
    failures = [f"{role}: {report[role]['error']}" for role in ("prefill", "decode", "baseline")
                if "error" in report[role]]
    if failures:
        return failures
    prefill, decode, base = (report[r]["requests"] for r in ("prefill", "decode", "baseline"))
    if prefill[1]["num_cached_tokens"] <= 0:
        failures.append("the prefill instance's second request did not hit the server (nothing stored?)")
    if decode[0]["num_cached_tokens"] <= 0:
        failures.append("the decode instance's first request did not hit what the prefill instance stored")
    if base[0]["num_cached_tokens"] != 0:
        failures.append("the baseline had cached tokens (it must compute everything)")
    if not decode[0]["output"] == base[0]["output"] == prefill[0]["output"]:
        failures.append(f"outputs differ: decode {decode[0]['output']} baseline {base[0]['output']}")
    if report["survivors"]:
        failures.append(f"vLLM processes outlived their run: {report['survivors']}")
    return failures


def render(report: dict) -> str:
    lines = [f"model {report['model']}, prompt {report['prompt_tokens']} tokens, greedy {report['max_tokens']} "
             f"tokens, LMCache 0.5.6 server {report['server']}"]
    for role in ("prefill", "decode", "baseline"):
        r = report[role]
        if "error" in r:
            lines.append(f"  {role:8s} ERROR {r['error']}")
            continue
        for i, q in enumerate(r["requests"]):
            ttft = f"{q['ttft_s']:.2f} s" if q["ttft_s"] else "n/a"
            lines.append(f"  {role:8s} request {i + 1}: {q['num_cached_tokens']:5d} of {q['prompt_tokens']} prompt "
                         f"tokens from LMCache, TTFT {ttft}, request {q['seconds']:.2f} s, output {q['output'][:8]}...")
    if "error" not in report["decode"] and "error" not in report["baseline"]:
        d, b = report["decode"]["requests"][0], report["baseline"]["requests"][0]
        if d["ttft_s"] and b["ttft_s"]:
            lines.append(f"  decode first-request TTFT {d['ttft_s']:.2f} s vs cold {b['ttft_s']:.2f} s: "
                         f"{b['ttft_s'] / d['ttft_s']:.1f}x faster; output identical: {d['output'] == b['output']}")
    failures = verdict(report)
    lines.append("hetero: OK" if not failures else "hetero: FAILED\n  " + "\n  ".join(failures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        from .results import emit

        result = child(json.loads(argv[1]))
        emit(result)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.hetero_vllm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, ".cache", "prefill-llama"))
    parser.add_argument("--prompt-tokens", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--envs", default=os.path.join(ROOT, ".envs"))
    parser.add_argument("--json", help="write the report here as JSON")
    args = parser.parse_args(argv)
    from .tiny_llama import make

    make(args.model, "prefill")
    with tempfile.TemporaryDirectory(prefix="hpu-shim-hetero-vllm-") as tmp:
        report = run(args.model, args.prompt_tokens, args.max_tokens, args.envs, tmp)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    print(render(report))
    return 0 if not verdict(report) else 1


if __name__ == "__main__":
    sys.exit(main())
