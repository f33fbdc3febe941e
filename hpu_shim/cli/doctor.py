"""``python -m hpu_shim doctor``: what the shim would do here, and what could go wrong.

Its last block is the *key fingerprint* (``docs/hetero.md``): run ``doctor`` on the prefill node and on
the decode node and compare. LMCache names a chunk by a hash of its tokens (and, since 0.4, the dtype),
with the model name and world size; anything that differs between the nodes is a silent miss, and a
different KV shape under the same model name is the wrong KV. The probe key -- the key of the chunk
of tokens ``0, 1, ..., chunk_size-1`` -- is computed by the installed LMCache itself, in a child
interpreter set up as the workload runs (``HPU_SHIM=1`` and the bootstrap on ``PYTHONPATH``,
``PYTHONHASHSEED`` left as it is), so it already holds every key ingredient. Where doctor learns the
rest: LMCache's own configuration (``LMCACHE_CONFIG_FILE`` / ``LMCACHE_*``: chunk size, hash
algorithm, remote URL, local disk) and the flags ``--model`` (vLLM's model name or local directory;
a directory's ``config.json`` gives the layers, KV heads, head size and dtype), ``--kv-shape
LAYERS,KV_HEADS,HEAD_SIZE``, ``--dtype`` and ``--world-size``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any

from ..runtime import config as _config

__all__ = ["diagnose", "render", "add_arguments", "key_fingerprint", "traps"]


def _find(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def diagnose(options: Any = None) -> list[tuple[str, str, str]]:
    """Rows of (check, value, level) with level in ok/info/warn/error; ``options`` from ``add_arguments``."""
    rows: list[tuple[str, str, str]] = []
    add = lambda check, value, level="ok": rows.append((check, str(value), level))  # noqa: E731
    add("python", f"{platform.python_version()} ({sys.executable})")
    if os.environ.get("HPU_SHIM_FAKE_HPU", "").strip() == "1":  # as sitecustomize would
        try:
            from ..testing import install_emulator

            install_emulator()
        except Exception as exc:
            add("emulated HPU", f"HPU_SHIM_FAKE_HPU=1 but it could not be installed: {exc}", "error")
    try:
        import torch

        add("torch", torch.__version__)
    except Exception as exc:  # torch is the user's; report, don't crash
        torch = None
        add("torch", f"not importable: {exc}", "error")
    hf = sys.modules.get("habana_frameworks")
    add("habana_frameworks", "emulated stub (hpu_shim.testing)" if getattr(hf, "__hpu_shim_emulated__", False)
        else "installed" if _find("habana_frameworks") else "not installed", "info")
    emulated = False
    try:
        from .. import testing

        emulated = testing.is_installed()
    except Exception:
        pass
    hpu = getattr(torch, "hpu", None) if torch is not None else None
    if hpu is None:
        add("torch.hpu", "absent", "info")
    else:
        try:
            add("torch.hpu", f"present, is_available()={hpu.is_available()}, device_count()={hpu.device_count()}")
        except Exception as exc:
            add("torch.hpu", f"present but broken: {exc}", "error")
    add("emulated HPU", "installed (hpu_shim.testing)" if emulated else
        "not installed (set HPU_SHIM_FAKE_HPU=1 to use it)", "info")
    lazy = os.environ.get("PT_HPU_LAZY_MODE")
    add("execution mode", ("lazy" if lazy != "0" else "eager") + f" (PT_HPU_LAZY_MODE={lazy})" if lazy is not None
        else "eager: PT_HPU_LAZY_MODE unset (current Habana default 0; SW 1.17 defaulted to lazy)", "info")
    add("lmcache", _version("lmcache") or "not installed", "info")
    try:
        from ..runtime.runtime import original_environ

        config = _config.load(original_environ())
        add("HPU_SHIM", {None: "unset (import hpu_shim installs)", True: "1", False: "0 (disabled)"}[config.enabled])
        add("scope", ",".join(config.scope))
        from ..backends import probe_hpu

        ok, why = probe_hpu() if torch is not None else (False, "torch missing")
        effective = {"auto": "hpu" if ok else "idle (no HPU: pass-through)", "hpu": "hpu" if ok else f"ERROR: {why}",
                     "cpu": "cpu"}[config.backend]
        add("backend", f"{config.backend} -> {effective}", "error" if effective.startswith("ERROR") else "ok")
        if effective in ("hpu", "cpu"):  # which connector moves KV for vLLM here (package metadata only)
            from ..compat.native_connector import describe_connector

            add("connector", describe_connector(backend=effective, native=config.native_connector), "info")
        add("strict", int(config.strict))
        add("report", config.report_path or "off")
    except _config.ShimConfigError as exc:
        add("configuration", str(exc), "error")
    seed = os.environ.get("PYTHONHASHSEED")
    add("PYTHONHASHSEED", seed if seed is not None else
        "unset: LMCache keys use hash(); set PYTHONHASHSEED=0 so vLLM's processes agree", "ok" if seed else "warn")
    if os.environ.get("PT_HPU_GPU_MIGRATION") == "1":
        add("GPU Migration Toolkit", "PT_HPU_GPU_MIGRATION=1: patches torch.cuda for the WHOLE process and makes "
            "torch.cuda.is_available() True everywhere; it conflicts with hpu_shim. Unset it.", "warn")
    else:
        add("GPU Migration Toolkit", "off (PT_HPU_GPU_MIGRATION not 1)")
    from .. import status

    st = status()
    add("shim in this process", f"{st['state']} (backend={st['backend']}, shimmed modules={len(st['shimmed_modules'])})",
        "info")
    # --- CORE (begin): what the shim cannot redirect, from disk and from this process's status() ---
    try:
        from .. import compat
        from ..core.finder import scan

        scope = _config.load(original_environ()).scope
        profile = compat.select(scope)
        stand_ins = set(profile.module_overrides) if profile is not None else set()
        for line in dict.fromkeys([*scan(scope, exclude=stand_ins), *st["not_redirected"]]):
            add("cannot be redirected", line, "warn")
    except _config.ShimConfigError:
        pass  # reported above
    # --- CORE (end) ---
    if getattr(options, "keys", True):
        rows.extend(key_fingerprint(options))
    return rows


# ---- HETERO: the key fingerprint and the cross-node traps -------------------------------------------------
def add_arguments(parser: Any) -> None:
    """``doctor``'s flags: what doctor cannot read from LMCache's configuration."""
    parser.add_argument("--model", help="vLLM's model name (as LMCache keys it), or a local model directory whose "
                        "config.json gives the KV shape and dtype")
    parser.add_argument("--kv-shape", metavar="LAYERS,KV_HEADS,HEAD_SIZE", help="the KV cache shape per layer")
    parser.add_argument("--dtype", help="the KV cache dtype (default: the model's torch_dtype, else bfloat16)")
    parser.add_argument("--world-size", type=int, default=1, help="vLLM's tensor-parallel world size (default 1)")
    parser.add_argument("--no-keys", dest="keys", action="store_false",
                        help="skip the key fingerprint (it starts one interpreter that imports LMCache)")


def _model_geometry(model: str | None) -> dict:
    """layers / kv heads / head size / dtype from a local model directory's config.json."""
    path = os.path.join(model, "config.json") if model else None
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    cfg = cfg.get("text_config", cfg)
    heads = cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_size = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads and cfg.get("hidden_size") else None)
    out = {"dtype": cfg.get("torch_dtype")}
    if cfg.get("num_hidden_layers") and kv_heads and head_size:
        out["kv_shape"] = (int(cfg["num_hidden_layers"]), int(kv_heads), int(head_size))
    return out


def _parse_kv_shape(text: str | None) -> tuple | None:
    if not text:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--kv-shape {text!r} is not valid; give LAYERS,KV_HEADS,HEAD_SIZE, e.g. 32,8,128")
    return tuple(int(p) for p in parts)


def _probe(model: str, world_size: int, dtype: str, kv_shape: tuple, timeout: float = 600) -> dict:
    """The probe key from the installed LMCache, in a child set up like the workload (shim on)."""
    from ..runtime import environment

    env = dict(os.environ)
    if env.get("HPU_SHIM", "").strip() != "0":
        env["HPU_SHIM"] = "1"
        env["PYTHONPATH"] = environment.with_bootstrap(env.get("PYTHONPATH"))
    spec = {"model_name": model, "world_size": world_size, "dtype": dtype, "kv_shape": list(kv_shape)}
    with tempfile.TemporaryDirectory(prefix="hpu-shim-doctor-") as tmp:
        env["HPU_SHIM_RESULT_FILE"] = path = os.path.join(tmp, "probe.jsonl")
        try:
            proc = subprocess.run([sys.executable, "-m", "hpu_shim.compat.keys", json.dumps(spec)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"the LMCache probe did not finish within {timeout:.0f} s"}
        from ..testing.results import read

        results = read(path)
    if not results:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the LMCache probe failed (rc={proc.returncode}): {tail[:300]}"}
    return results[-1]


def traps(probe: dict, seed: str | None, python: tuple = tuple(sys.version_info[:2])) -> list[tuple[str, str]]:
    """Known cross-node traps in this node's configuration: (name, what to do); empty when none."""
    found = []
    if seed is None:
        found.append(("PYTHONHASHSEED unset", "every process draws its own hash seed, so NONE_HASH and every "
                     "builtin-hash key differ between processes and nodes; set PYTHONHASHSEED=0 on both nodes "
                     "(`python -m hpu_shim run` sets it)"))
    builtin = probe.get("hash_func") in ("hash", "stable_hash")
    if python < (3, 12) and probe.get("hashes_none") and builtin:
        found.append(("hash(None) on Python < 3.12", "LMCache " + probe["lmcache"] + " keys hash None, whose hash is "
                     "an address here; " + ("hpu_shim makes this node's keys CPython 3.12's -- the other node needs "
                     "Python >= 3.12 or hpu_shim" if probe.get("hash_fixed") else
                     "NOT fixed in this process (hpu_shim is off or idle here): keys differ in every process")))
    if probe.get("local_disk"):
        found.append(("local_disk used as shared storage",
                      f"local_disk={probe['local_disk']} is node-local: LMCache indexes it in process memory, so "
                      f"another process or node never hits it even on a shared mount; for shared storage use "
                      f"remote_url: fs://localhost:0/<shared path>"))
    url = probe.get("remote_url") or ""
    if url.startswith("fs:///"):
        found.append(("fs:/// URL",
                      f"remote_url={url}: unmodified LMCache rejects it (\"missing host\") and drops every chunk "
                      f"while logging them stored; hpu_shim reads it as fs://localhost:0/..., a node without "
                      f"hpu_shim must write fs://localhost:0/{url[len('fs:///'):]}"))
    return found


def key_fingerprint(options: Any = None) -> list[tuple[str, str, str]]:
    """Rows to compare between the prefill node and the decode node (labels fit doctor's column)."""
    rows: list[tuple[str, str, str]] = []
    add = lambda check, value, level="ok": rows.append((check, str(value), level))  # noqa: E731
    model = getattr(options, "model", None)
    geometry = _model_geometry(model)
    try:
        kv_shape = _parse_kv_shape(getattr(options, "kv_shape", None)) or geometry.get("kv_shape")
    except ValueError as exc:
        add("key KV shape/layer", str(exc), "error")
        return rows
    dtype = getattr(options, "dtype", None) or geometry.get("dtype") or "bfloat16"
    world_size = getattr(options, "world_size", None) or 1
    name = model or "unknown"
    seed = os.environ.get("PYTHONHASHSEED")
    add("key PYTHONHASHSEED", seed if seed is not None else "unset", "ok" if seed is not None else "warn")
    probe = _probe(name, world_size, dtype, kv_shape or (1, 1, 1))
    if "error" in probe:
        add("key fingerprint", f"unavailable: {probe['error']} (LMCache must be importable here, as in the "
            f"workload)", "info")
        return rows
    func = "hpu_shim stable_hash: CPython 3.12's hash(None)" if probe.get("hash_fixed") else probe["hash_func"]
    add("key hash algorithm", f"{probe['hash_algorithm']} ({func})")
    add("key NONE_HASH", probe["none_hash"])
    add("key LMCache", probe["lmcache"])
    add("key model name", name if model else "unknown: pass --model (vLLM's model name)", "ok" if model else "warn")
    add("key world size", world_size)
    add("key chunk size", f"{probe['chunk_size']} (save_unfull_chunk={probe['save_unfull_chunk']})")
    add("key kv dtype", dtype)
    add("key KV shape/layer", f"K,V [{kv_shape[1]} heads x {kv_shape[2]}] x {kv_shape[0]} layers" if kv_shape
        else "unknown: pass --kv-shape LAYERS,KV_HEADS,HEAD_SIZE or --model DIR", "ok" if kv_shape else "warn")
    add("key probe", f"{probe['probe_key']} (tokens 0..{probe['chunk_size'] - 1})")
    digest = hashlib.sha256(json.dumps([probe["probe_key"], dtype, list(kv_shape or ())]).encode()).hexdigest()
    add("key fingerprint", f"{digest[:16]}  (probe key + dtype + KV shape: equal on both nodes = same keys, "
        f"same chunk shapes)")
    found = traps(probe, seed)
    for trap, what in found:
        add("key trap", f"{trap}: {what}", "warn")
    add("key verdict", "no known trap" if not found else f"{len(found)} trap(s): " + "; ".join(t for t, _ in found),
        "ok" if not found else "warn")
    return rows


def render(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    marks = {"ok": "  ", "info": "  ", "warn": "! ", "error": "x "}
    return "\n".join(f"{marks[level]}{check.ljust(width)}  {value}" for check, value, level in rows)
