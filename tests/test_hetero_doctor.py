"""``python -m hpu_shim doctor``'s key fingerprint: equal on a prefill and a decode node that agree,
and the known traps named (hpu_shim.cli.doctor, HETERO block)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from hpu_shim.cli import doctor

REPO = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("HPU_SHIM_ENVS", REPO / ".envs"))

PROBE = {"lmcache": "0.3.7", "hash_algorithm": "builtin", "hash_func": "stable_hash", "hash_fixed": True,
         "hashes_none": True, "none_hash": 1, "chunk_size": 256, "save_unfull_chunk": True, "remote_url": None,
         "local_disk": None, "probe_key": "vllm@m@1@0@abc"}


@pytest.mark.parametrize("change, seed, python, names", [
    ({}, "0", (3, 12), []),
    ({}, None, (3, 12), ["PYTHONHASHSEED unset"]),
    ({}, "0", (3, 10), ["hash(None) on Python < 3.12"]),
    ({"hashes_none": False}, "0", (3, 10), []),  # >= 0.4 canonicalise None away
    ({"hash_func": "sha256"}, "0", (3, 10), []),
    ({"local_disk": "/mnt/shared/kv"}, "0", (3, 12), ["local_disk used as shared storage"]),
    ({"remote_url": "fs:///mnt/kv"}, "0", (3, 12), ["fs:/// URL"]),
    ({"remote_url": "fs://localhost:0/mnt/kv"}, "0", (3, 12), []),
])
def test_traps(change, seed, python, names):
    found = doctor.traps({**PROBE, **change}, seed, python)
    assert [name for name, _ in found] == names
    text = " ".join(what for _, what in found)
    if "fs:/// URL" in names:
        assert "fs://localhost:0/mnt/kv" in text
    if python < (3, 12) and names:
        assert "hpu_shim makes this node's keys CPython 3.12's" in text  # hash_fixed: the other node's job


def test_unfixed_hash_none_says_so():
    ((_, what),) = doctor.traps({**PROBE, "hash_fixed": False, "hash_func": "hash"}, "0", (3, 11))
    assert "NOT fixed in this process" in what


def test_model_directory_and_kv_shape(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "num_attention_heads": 4,
                                                      "num_key_value_heads": 2, "hidden_size": 128,
                                                      "torch_dtype": "bfloat16"}))
    assert doctor._model_geometry(str(tmp_path)) == {"dtype": "bfloat16", "kv_shape": (4, 2, 32)}
    assert doctor._model_geometry("meta-llama/not-a-dir") == {}
    assert doctor._parse_kv_shape("32,8,128") == (32, 8, 128)
    with pytest.raises(ValueError, match="LAYERS,KV_HEADS,HEAD_SIZE"):
        doctor._parse_kv_shape("32,8")
    rows = doctor.key_fingerprint(types.SimpleNamespace(kv_shape="0,1,2"))
    assert rows[0][2] == "error"


def _doctor(model: Path, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HPU_SHIM", "LMCACHE_")) and k != "PYTHONPATH"}
    release = ENVS / "lmcache-0.3.7"
    if not (release / "lmcache" / "__init__.py").is_file():
        pytest.fail(f"LMCache 0.3.7 is not installed in {release}: run `make lmcache-envs`")
    base.update(PYTHONPATH=os.pathsep.join([str(release), str(REPO)]), PYTHONHASHSEED="0",
                LMCACHE_TRACK_USAGE="false", **env)
    proc = subprocess.run([sys.executable, "-m", "hpu_shim", "doctor", "--model", str(model)], env=base,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _row(out: str, label: str) -> list[str]:
    return re.findall(rf"^[! x]\s{label}\s+(.*)$", out, re.M)


@pytest.mark.lmcache
def test_prefill_and_decode_nodes_print_the_same_fingerprint(tmp_path):
    """A cpu-backend 'prefill node' and an emulated-HPU 'decode node' with LMCache 0.3.7: same probe key
    and fingerprint (Python 3.11 here: the keys fix is what makes them agree); the traps are named."""
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "num_attention_heads": 4,
                                                      "num_key_value_heads": 2, "head_dim": 32,
                                                      "hidden_size": 128, "torch_dtype": "bfloat16"}))
    prefill = _doctor(tmp_path, HPU_SHIM="1", HPU_SHIM_BACKEND="cpu", LMCACHE_REMOTE_URL="fs:///mnt/kv",
                      LMCACHE_LOCAL_DISK="file:///local/kv")
    decode = _doctor(tmp_path, HPU_SHIM_FAKE_HPU="1", PT_HPU_LAZY_MODE="1")
    for label in ("key probe", "key fingerprint", "key NONE_HASH", "key KV shape/layer"):
        assert _row(prefill, label) == _row(decode, label) and _row(prefill, label), (label, prefill, decode)
    assert _row(decode, "key KV shape/layer") == ["K,V [2 heads x 32] x 4 layers"]
    assert _row(decode, "key LMCache") == ["0.3.7"] and _row(decode, "key PYTHONHASHSEED") == ["0"]
    assert "stable_hash" in _row(decode, "key hash algorithm")[0]
    assert _row(decode, "key verdict") == ["1 trap(s): hash(None) on Python < 3.12"] if sys.version_info < (3, 12) \
        else ["no known trap"]
    (verdict,) = _row(prefill, "key verdict")
    assert "local_disk used as shared storage" in verdict and "fs:/// URL" in verdict
