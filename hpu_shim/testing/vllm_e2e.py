"""vLLM (CPU build) with LMCache's connector, end to end: the same prompt twice.

    python -m hpu_shim.testing.vllm_e2e --model DIR [--lmcache] [--rounds 2] [--prompt-tokens 300]

Run it in a fresh interpreter with the environment under test (``HPU_SHIM=1 HPU_SHIM_BACKEND=cpu``
and ``PYTHONPATH=<sitecustomize>:<lmcache>``, or without the shim). Round 1 stores, round 2
should retrieve from LMCache (prefix caching is off, so every cached token came from LMCache).
Emits its result through ``hpu_shim.testing.results`` (a file, never shared stdout): per round the
greedy token ids, ``num_cached_tokens`` and the wall time (with ``--max-tokens 1`` that is the time
to first token), and the load average around the rounds. vLLM's EngineCore and worker processes are
always killed before exit: they can outlive a hard exit and hold gigabytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main", "kill_children"]


def kill_children(timeout: float = 10.0) -> int:
    """Terminate (then kill) every descendant of this process; returns how many there were."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    return len(children)


def _run(args: argparse.Namespace) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig

    from .tiny_llama import prompt

    kwargs = dict(model=args.model, enforce_eager=True, enable_prefix_caching=False, max_model_len=args.max_model_len,
                  dtype="bfloat16", seed=0, max_num_batched_tokens=args.max_model_len)
    if args.lmcache:
        kwargs["kv_transfer_config"] = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both")
    start = time.perf_counter()
    llm = LLM(**kwargs)
    built = time.perf_counter() - start
    vocab = llm.get_tokenizer().vocab_size
    text = prompt(args.prompt_tokens, vocab=vocab)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    if args.warmup:  # a different prompt first, so that the measured rounds pay no one-off costs
        llm.generate([prompt(args.prompt_tokens, vocab=vocab, seed=99)], params, use_tqdm=False)
    rounds, load = [], os.getloadavg()
    for _ in range(args.rounds):  # one request per round; with max_tokens=1 the wall time is the TTFT
        t0 = time.perf_counter()
        out = llm.generate([text], params, use_tqdm=False)[0]
        rounds.append({"seconds": time.perf_counter() - t0, "prompt_tokens": len(out.prompt_token_ids),
                       "num_cached_tokens": out.num_cached_tokens, "output": list(out.outputs[0].token_ids)})
    return {"llm_init_s": built, "lmcache": args.lmcache, "rounds": rounds, "loadavg": [load, os.getloadavg()]}


def _machine() -> str:
    import platform

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB"


def _write_ttft(path: str, result: dict) -> None:
    miss, hit = result["rounds"][0], result["rounds"][1]
    figures = {"miss_s": miss["seconds"], "hit_s": hit["seconds"], "ratio": miss["seconds"] / hit["seconds"],
               "prompt_tokens": miss["prompt_tokens"], "hit_cached_tokens": hit["num_cached_tokens"],
               "miss_cached_tokens": miss["num_cached_tokens"], "machine": _machine(),
               "loadavg": result.get("loadavg")}  # a shared machine's load makes TTFT noisy: say how busy it was
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(figures, fh, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.vllm_e2e", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--lmcache", action="store_true", help="use LMCacheConnectorV1 (kv_both)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--warmup", action="store_true", help="serve one other prompt before the measured rounds")
    parser.add_argument("--ttft-json", help="write the miss/hit TTFT figures (round 1 / round 2) to this file")
    args = parser.parse_args(argv)
    try:
        result = _run(args)
    except BaseException as exc:  # reported to the test, which asserts on it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        killed = kill_children()
    result["killed_children"] = killed
    if args.ttft_json and "rounds" in result:
        _write_ttft(args.ttft_json, result)
    from .results import emit

    emit(result)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
