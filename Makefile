# Two commands on a fresh machine with only python3:
#   make demo   -- create .venv, install plstream, run the simulated camera through the whole pipeline
#   make test   -- create .venv, install plstream with its test tools, check the habits (make lint), run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# lint-imports and mypy read the package as it installs (the repository's folders map to plstream.*
# through package-dir, which neither tool can follow): a plain copy is installed here first.
GRAPH := build/import-graph

.PHONY: demo test pytest lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lint]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/plstream run

test: lint pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(GRAPH) build/lib  # a stale build/lib would be installed (and type-checked) again
	$(BIN)/python -m pip install --quiet --no-deps --target $(GRAPH) .
	cd $(GRAPH) && PYTHONPATH=$(CURDIR)/tests $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml
	cd $(GRAPH) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/build/mypy-cache -p plstream

clean:
	rm -rf $(VENV) build *.egg-info
