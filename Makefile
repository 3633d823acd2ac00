# Two entry points do all set-up on a fresh machine:
#   make quickstart   the main job end to end on the embedded defaults
#   make test         the whole test suite (CI runs this through .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(sort $(wildcard plugins/*/setup.cfg))
PLUGIN_DIRS := $(patsubst %/setup.cfg,%,$(PLUGINS))
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test test-fast system-deps docs clean bench k8s-control-plane

$(STAMP): setup.cfg requirements-test.txt $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q -e . $(addprefix -e ,$(PLUGIN_DIRS))
	touch $(STAMP)

venv: $(STAMP)

# Debian packages some tests need (real registries, engines, Prometheus...). Only as root.
system-deps:
	@bash scripts/install-system-deps.sh

quickstart: venv system-deps
	$(PY) scripts/quickstart.py

test: venv system-deps
	$(PY) -m pytest -n 2 --dist loadgroup

# The Kubernetes 1.20.2 control plane the mlops-kubernetes tests start (cached; the test fixture builds it too).
k8s-control-plane: system-deps
	bash scripts/k8s-control-plane.sh build

test-fast: venv
	$(PY) -m pytest -m "not slow"

docs: venv
	$(PY) docs/gen_reference.py && $(PY) -m mkdocs build --strict

# The peers (MLflow, MLServer) live in their own venv so they never leak into ours.
bench-venv:
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -r benchmarks/requirements.txt

bench: venv bench-venv
	@for b in $(sort $(wildcard benchmarks/bench_*.py benchmarks/*/bench_*.py)); do echo "## $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mlops build *.egg-info
