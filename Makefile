# The two commands the README promises do all set-up on a fresh machine:
#   make demo   -- the main job on the emulated HPU
#   make test   -- the test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
ENVS ?= .envs
# LMCache releases the test suite runs against (each in its own --target dir under $(ENVS)).
LMCACHE_CI_VERSIONS ?= 0.3.7 0.4.2 0.4.3 0.5.6
export LMCACHE_TRACK_USAGE := false

.PHONY: setup demo test doctor lmcache-envs clean

$(VENV)/.setup-ok: pyproject.toml .ci/constraints.txt
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU build that lies on disk. A resolver must never pull a CUDA torch.
	$(PY) -m pip install -q --disable-pip-version-check -c .ci/constraints.txt torch==2.13.0 numpy
	$(PY) -m pip install -q --disable-pip-version-check -c .ci/constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.setup-ok

doctor: setup
	HPU_SHIM_FAKE_HPU=1 $(PY) -m hpu_shim doctor

demo: doctor
	$(PY) -m hpu_shim demo

lmcache-envs: setup
	bash .ci/lmcache-envs.sh $(PY) $(ENVS) $(LMCACHE_CI_VERSIONS)

test: setup lmcache-envs
	HPU_SHIM_ENVS=$(abspath $(ENVS)) $(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(ENVS)
