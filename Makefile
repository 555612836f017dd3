# Two commands for users: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lock clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]' -c constraints.txt
	touch $@

demo: venv
	$(BIN)/arbbot demo $(ARGS)

test: venv
	$(BIN)/ruff check bot strategies tests
	$(BIN)/mypy
	$(BIN)/pytest -W error $(PYTEST_ARGS)

lock: | $(BIN)/python
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt.freeze
	{ \
	  echo '# Exact versions CI installs: pip install -c constraints.txt'; \
	  echo '# Generated from .venv; refresh with `make lock` after changing dependencies.'; \
	  grep -v '^arbbot' constraints.txt.freeze; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -f constraints.txt.freeze

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
