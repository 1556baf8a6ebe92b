# Convoy's two set-up commands: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convoy-installed
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py
PYTEST_ARGS ?=
# Parallel pytest workers for `make test` (whole test files per worker, so module fixtures and
# the local Slurm cluster stay in one process); TEST_JOBS=0 runs everything in one process.
TEST_JOBS ?= 2

.PHONY: setup train test clean-workdirs

setup: $(STAMP)

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 12) else 1)' || \
	  { echo "Convoy needs Python 3.9-3.12 (TensorFlow 2.18); $(PYTHON) is $$($(PYTHON) --version)."; exit 1; }
	@command -v g++ >/dev/null || { echo "Building Horovod needs a C++ compiler: apt-get install g++ (Debian/Ubuntu)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	@# cmake comes from PyPI, so the only system prerequisite for Horovod is the compiler.
	$(PY) -m pip install --quiet 'cmake>=3.13,<4'
	@# Horovod is built from source against the TensorFlow just installed (no build isolation),
	@# with the Gloo controller, and MPI too when mpicxx is present.
	env PATH=$(abspath $(VENV))/bin:$$PATH HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j$$(nproc) \
	  $$(command -v mpicxx >/dev/null && echo HOROVOD_WITH_MPI=1 || echo HOROVOD_WITHOUT_MPI=1) \
	  $(PY) -m pip install --quiet --no-build-isolation --no-cache-dir 'horovod==0.28.1'
	$(PY) -m pip check
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m trainer.train --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

clean-workdirs:
	rm -rf workdirs
