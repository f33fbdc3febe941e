"""One release's cross-process run: real servers, a producer process, storage faults, a consumer process.

``run_release(version, envs, workdir, faults=True)`` starts the shared storage (a directory for
``fs://``, LMCache's own server from that release for ``lm://``, a real ``redis-server`` for
``redis://``), runs one producer interpreter (cpu backend, standard layout, block size 16) that
stores every spec of ``plan()``, damages chunk files where a spec asks for it, runs one consumer
interpreter (emulated HPU, vllm-gaudi layout, block size 128) over the consumer specs, stops every
server and checks none survived. It returns ``{name: result}`` for the consumer specs plus
``"_produce"`` (the producer results). Tests (``tests/test_hetero.py``, ``tests/test_faults.py``) and
``python -m hpu_shim.testing.hetero_run VERSION`` (a human-readable table) use it.

Faults (``faults=True``) need one spec each, in an order that keeps servers usable: file faults on
their own chunks, frozen servers thawed after each spec, killed servers last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
import sys
import time
from typing import Any

from . import hetero_servers
from .results import run_child

__all__ = ["BACKENDS", "TIMEOUT", "ConsumerSpec", "plan", "run_release", "cached", "env_for", "release_path",
           "damage", "PRODUCER_LAYOUT"]

BACKENDS = ("fs", "lm", "redis")
#: HPU_SHIM_REMOTE_TIMEOUT for the consumer: small, so a frozen server costs about a second.
TIMEOUT = 1.0
#: The producer's KV layout: the standard CUDA one (LMCache's per-layer 5-D), every release.
PRODUCER_LAYOUT = "standard"
#: Releases whose chunk keys hash ``None`` with the builtin (the ``keys`` fix-up applies, < 0.4).
BUILTIN_NONE_KEYS = ("0.3.",)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bootstrap() -> str:
    checkout = os.path.join(ROOT, "sitecustomize")
    if os.path.isfile(os.path.join(checkout, "sitecustomize.py")):
        return checkout
    return os.path.join(ROOT, "hpu_shim", "_sitecustomize")


def release_path(version: str, envs: str) -> str:
    path = os.path.join(envs, f"lmcache-{version}")
    if not os.path.isfile(os.path.join(path, "lmcache", "__init__.py")):
        raise FileNotFoundError(f"LMCache {version} is not installed in {path}: run "
                                f"`bash .ci/lmcache-envs.sh .venv/bin/python {envs} {version}` (make lmcache-envs)")
    return path


def env_for(version: str, envs: str, role: str, **extra: str) -> dict:
    """A fresh interpreter configured like the node: prefill (cpu backend) or decode (emulated HPU)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPU_SHIM") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([_bootstrap(), release_path(version, envs), ROOT]), HPU_SHIM="1",
               LMCACHE_TRACK_USAGE="false", PYTHONHASHSEED="0")
    if role == "produce":
        env.update(HPU_SHIM_BACKEND="cpu")
    else:
        env.update(HPU_SHIM_BACKEND="hpu", HPU_SHIM_FAKE_HPU="1", PT_HPU_LAZY_MODE="1",
                   HPU_SHIM_REMOTE_TIMEOUT=str(TIMEOUT))
    env.update(extra)
    return env


@dataclasses.dataclass
class ConsumerSpec:
    """A consumer spec and how its data gets there: which producer spec, and what is done to the store."""

    name: str
    backend: str
    producer: str  # name of the producer spec whose reference it checks against
    spec: dict = dataclasses.field(default_factory=dict)
    damage: str | None = None  # truncate | delete | header | kv_t2d | payload (fs chunk 1, before the consumer)


def plan(version: str, faults: bool) -> tuple[dict[str, dict], list[ConsumerSpec]]:
    """Producer specs by name, and the consumer specs in the order they must run."""
    layout = PRODUCER_LAYOUT
    produce: dict[str, dict] = {f"main-{b}": {"backend": b, "seed": 0, "layout": layout} for b in BACKENDS}
    consume = [ConsumerSpec(f"main-{b}", b, f"main-{b}") for b in BACKENDS]
    if not faults:
        return produce, consume
    for i, how in enumerate(("truncate", "delete", "header", "payload", "kv_t2d"), start=1):
        produce[f"file-{how}"] = {"backend": "fs", "seed": i, "layout": layout}
        consume.append(ConsumerSpec(f"file-{how}", "fs", f"file-{how}", damage=how))
    # fs:///PATH, the form shared-filesystem guides write (LMCache's parser wants fs://host:port/PATH).
    produce["bare-fs-url"] = {"backend": "fs", "seed": 20, "layout": layout, "url_form": "bare"}
    consume.append(ConsumerSpec("bare-fs-url", "fs", "bare-fs-url", {"url_form": "bare"}))
    produce["control-bare-fs-url"] = {"backend": "fs", "seed": 21, "layout": layout, "url_form": "bare",
                                      "without": ["fs_url"], "flush_timeout": 3.0}
    # Another model under the same model name: more / fewer layers than the decode node's 4.
    produce["model-6-layers"] = {"backend": "fs", "seed": 10, "layout": layout, "num_layers": 6}
    produce["model-2-layers"] = {"backend": "fs", "seed": 11, "layout": layout, "num_layers": 2}
    consume += [ConsumerSpec("guard-fewer-layers-here", "fs", "model-6-layers"),
                ConsumerSpec("guard-more-layers-here", "fs", "model-2-layers")]
    for b in ("lm", "redis"):
        consume += [ConsumerSpec(f"freeze-at-lookup-{b}", b, f"main-{b}", {"fault": "freeze", "fault_at": "lookup"}),
                    ConsumerSpec(f"freeze-at-retrieve-{b}", b, f"main-{b}", {"fault": "freeze"})]
    # Negative controls: the same runs with one fix-up undone show the defect it prevents.
    controls = [ConsumerSpec("control-guards-fewer-layers-here", "fs", "model-6-layers", {"without": ["guards"]}),
                ConsumerSpec("control-remote-freeze-lm", "lm", "main-lm",
                             {"fault": "freeze", "without": ["remote", "lm_socket"], "deadline": 5 * TIMEOUT}),
                ConsumerSpec("control-close-redis", "redis", "main-redis", {"without": ["close"],
                                                                            "close_timeout": 3 * TIMEOUT})]
    if version.startswith(BUILTIN_NONE_KEYS):
        controls.append(ConsumerSpec("control-keys-fs", "fs", "main-fs", {"without": ["keys"]}))
        controls.append(ConsumerSpec("control-retrieve-truncate", "fs", "file-truncate", {"without": ["retrieve"]}))
    consume += controls
    consume += [ConsumerSpec(f"kill-at-retrieve-{b}", b, f"main-{b}", {"fault": "kill"}) for b in ("lm", "redis")]
    return produce, consume


def _fs_dir(url: str) -> str:
    return url.split("localhost:0", 1)[1] if "localhost:0" in url else url[len("fs://"):]


def _url(server: Any, form: str | None) -> str:
    """The server's URL, or for ``fs`` with ``form="bare"`` the ``fs:///PATH`` spelling of it."""
    return "fs://" + _fs_dir(server.url) if form == "bare" else server.url


def damage(store_dir: str, chunk_key: str, how: str) -> str:
    """Damage one fs chunk file the way a crashed writer or a bad disk would; returns its path."""
    path = os.path.join(store_dir, chunk_key.replace("/", "-") + ".data")
    size = os.path.getsize(path)
    if how == "delete":
        os.unlink(path)
    elif how == "truncate":
        os.truncate(path, size // 2)
    elif how == "header":  # RemoteMetadata: 7 little-endian int32 (length, format, dtype, 4-D shape)
        with open(path, "r+b") as fh:
            fh.write(struct.pack("<7i", *([-1] * 7)))
    elif how == "kv_t2d":  # a chunk in LMCache's layerwise CUDA format (MemoryFormat.KV_T2D == 2 in 0.3.7-0.5.6)
        with open(path, "r+b") as fh:
            header = list(struct.unpack("<7i", fh.read(28)))
            header[1] = 2
            fh.seek(0)
            fh.write(struct.pack("<7i", *header))
    elif how == "payload":  # the data path's negative control: flip one KV byte
        with open(path, "r+b") as fh:
            fh.seek(size - 7)
            byte = fh.read(1)
            fh.seek(size - 7)
            fh.write(bytes([byte[0] ^ 0x55]))
    else:
        raise ValueError(f"unknown damage {how!r}: delete, truncate, header, kv_t2d or payload")
    return path


def run_release(version: str, envs: str, workdir: str, faults: bool = True, timeout: float = 900) -> dict:
    """See the module docstring. Raises with the children's output if a child produced no result."""
    release = release_path(version, envs)
    produce, consume = plan(version, faults)
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        # LMCache's server imports while the producer does; the producer polls until it accepts.
        servers = {b: stack.enter_context(hetero_servers.start(b, workdir, release, ready=False)) for b in BACKENDS}
        refs = {name: os.path.join(workdir, f"ref-{name}.pt") for name in produce}
        pspecs = [dict(role="produce", url=_url(servers[d["backend"]], d.get("url_form")), reference=refs[name],
                       block_size=16, **{k: v for k, v in d.items() if k not in ("backend", "url_form")})
                  for name, d in produce.items()]
        t0 = time.perf_counter()
        child = run_child([sys.executable, "-m", "hpu_shim.testing.hetero", json.dumps(pspecs)],
                          env=env_for(version, envs, "produce"), timeout=timeout)
        if len(child.results) != len(pspecs):
            raise AssertionError(f"producer ({version}) emitted {len(child.results)} of {len(pspecs)} results\n"
                                 + child.diagnostics())
        dead = [f"{s.name} (rc={s.proc.returncode})\n{s.log_tail()}" for s in servers.values()
                if s.proc and not s.alive()]
        if dead:
            raise AssertionError("storage server(s) exited during the producer run:\n" + "\n".join(dead))
        out["_produce"] = dict(zip(produce, child.results))
        out["_produce_s"] = time.perf_counter() - t0
        for c in consume:
            if c.damage:
                keys = out["_produce"][c.producer].get("chunk_keys") or []
                if len(keys) < 2:
                    raise AssertionError(f"producer spec {c.producer} reported no chunk keys: "
                                         f"{out['_produce'][c.producer]}")
                damage(_fs_dir(servers["fs"].url), keys[1], c.damage)
        cspecs = []
        for c in consume:
            pspec = produce[c.producer]
            extra = dict(c.spec)
            spec = dict(role="consume", url=_url(servers[c.backend], extra.pop("url_form", None)),
                        reference=refs[c.producer], layout="kv_tuple", block_size=128, seed=pspec["seed"],
                        server_pid=servers[c.backend].pid)
            spec.update(extra)
            cspecs.append(spec)
        t0 = time.perf_counter()
        child = run_child([sys.executable, "-m", "hpu_shim.testing.hetero", json.dumps(cspecs)],
                          env=env_for(version, envs, "consume"), timeout=timeout)
        if len(child.results) != len(cspecs):
            raise AssertionError(f"consumer ({version}) emitted {len(child.results)} of {len(cspecs)} results\n"
                                 + child.diagnostics())
        out.update(zip((c.name for c in consume), child.results))
        out["_consume_s"] = time.perf_counter() - t0
        out["_servers"] = {b: s.pid for b, s in servers.items()}
    return out


_CACHE: dict = {}


def cached(version: str, envs: str, workdir: Any, faults: bool) -> dict:
    """``run_release`` once per process and arguments (tests in several files share one run).

    ``workdir`` is a directory or a callable returning one (called only when the run happens)."""
    key = (version, os.path.abspath(envs), faults)
    if key not in _CACHE:
        _CACHE[key] = run_release(version, envs, str(workdir() if callable(workdir) else workdir), faults=faults)
        keep = os.environ.get("HPU_SHIM_HETERO_RESULTS")  # a directory: keep the raw results of a test run
        if keep:
            os.makedirs(keep, exist_ok=True)
            with open(os.path.join(keep, f"hetero-{version}.json"), "w", encoding="utf-8") as fh:
                json.dump(_CACHE[key], fh, indent=1, default=str)
    return _CACHE[key]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m hpu_shim.testing.hetero_run", description=__doc__)
    parser.add_argument("versions", nargs="+")
    parser.add_argument("--envs", default=os.path.join(ROOT, ".envs"))
    parser.add_argument("--no-faults", action="store_true")
    args = parser.parse_args(argv)
    keys = ("hit", "retrieved", "bit_exact", "equals_expected", "lookup_s", "retrieve_s", "close_returned", "hung",
            "error")
    for version in args.versions:
        with tempfile.TemporaryDirectory(prefix="hpu-shim-hetero-") as tmp:
            results = run_release(version, args.envs, tmp, faults=not args.no_faults)
        print(f"== LMCache {version}: producer {results['_produce_s']:.0f} s, consumer {results['_consume_s']:.0f} s")
        for name, r in results.items():
            if not name.startswith("_"):
                print(f"  {name:36s} " + " ".join(f"{k}={r.get(k)!r:.8}" for k in keys if k in r)
                      + (f" warnings={len(r['warnings'])}" if r.get("warnings") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
