# make demo: create .venv if missing, install gmmssl, run the main job (parallel pancakes, CPU).
# make test: the same environment, then the whole test suite (on up to 4 workers, pytest-xdist),
#   on the CPU; JAX_PLATFORMS=cuda make test (or make test-gpu) runs the same suite on a GPU,
#   with jax's CUDA plugin installed in the venv (pip install 'jax[cuda13]').
# make test PYTHON=python3.13 VENV=.venv313: the suite on another interpreter (as .ci/run does).
# make docs: regenerate the API reference, docs/api.md, from the docstrings.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gmmssl-installed
JAX_PLATFORMS ?= cpu

.PHONY: demo test test-gpu docs install clean

install: $(STAMP)

# Installed with uv when pip can fetch it (15 s here against pip's 60 s: most of pip's time
# is compiling every file of every dependency to bytecode); pip is the fallback when uv
# cannot be installed or fails. The venv is made without pip (ensurepip alone takes 8 s
# here): the base interpreter's pip puts uv into it (pip >= 22.3, --python), and uv
# installs pip with the test extra; the fallback runs ensurepip first.
# Bytecode is then written on first import, for the modules actually used: so recipes
# run with PYTHONDONTWRITEBYTECODE unset (a machine that sets it would otherwise compile
# jax and the rest in memory again in every process the tests start).
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	if { test -x $(BIN)/uv || $(PYTHON) -m pip --python $(BIN)/python install --quiet uv || { $(BIN)/python -m ensurepip --upgrade >/dev/null && $(BIN)/python -m pip install --quiet uv; }; } \
	  && $(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[test]'; \
	then :; else \
	  echo "uv unavailable or failed: installing with pip"; \
	  { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade; } \
	  && $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e '.[test]'; \
	fi
	@touch $(STAMP)

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/gmmssl run pancakes

test: $(STAMP)
	JAX_PLATFORMS=$(JAX_PLATFORMS) $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations=15

test-gpu:
	$(MAKE) test JAX_PLATFORMS=cuda

docs: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m gmmssl.apidoc docs/api.md

clean:
	rm -rf $(VENV) results .pytest_cache
