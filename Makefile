# make demo: create .venv if missing, install gmmssl, run the main job (parallel pancakes, CPU).
# make test: the same environment, then the whole test suite (on up to 4 workers, pytest-xdist).
# make docs: regenerate the API reference, docs/api.md, from the docstrings.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gmmssl-installed

.PHONY: demo test docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/gmmssl run pancakes

test: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations=15

docs: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m gmmssl.apidoc docs/api.md

clean:
	rm -rf $(VENV) results .pytest_cache
