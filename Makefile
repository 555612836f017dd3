# Two commands for users: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHAIN_STAMP := chain/node_modules/.installed

.PHONY: venv chain-deps demo test lock clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]' -c constraints.txt
	touch $@

# The local chain's npm packages (anvil, Uniswap V2), pinned by chain/package-lock.json. Install
# scripts stay off: the anvil binary arrives in its platform package, nothing is downloaded besides.
chain-deps: $(CHAIN_STAMP)

$(CHAIN_STAMP): chain/package.json chain/package-lock.json
	@command -v npm >/dev/null || { echo "npm is not on PATH: install Node.js 20+ and npm (e.g. apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix chain --no-audit --no-fund --ignore-scripts
	touch $@

demo: venv chain-deps
	$(BIN)/arbbot demo $(ARGS)

test: venv chain-deps
	$(BIN)/ruff check bot strategies tests
	$(BIN)/mypy
	$(BIN)/pytest -W error $(PYTEST_ARGS)

lock: | $(BIN)/python
	$(BIN)/python -m pip freeze --all --exclude-editable > constraints.txt.freeze
	{ \
	  echo '# Exact versions CI installs: pip install -c constraints.txt'; \
	  echo '# Generated from .venv; refresh with `make lock` after changing dependencies.'; \
	  grep -v -E '^(arbbot|pip|setuptools)==' constraints.txt.freeze; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -f constraints.txt.freeze

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
