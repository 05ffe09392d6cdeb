# Both targets bootstrap .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench graphviz chromium screenshots postgres clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Graphviz's `dot` renders SVG/PNG; DOT and Mermaid output never need it.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || echo "note: could not install graphviz; SVG/PNG rendering disabled"; \
	  else echo "note: install Graphviz (the 'dot' binary) for SVG/PNG rendering"; fi; }

# Debian's Chromium drives the console's browser tests (Playwright cannot download its own).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "note: could not install chromium; the console's browser tests skip outside CI"; \
	  else echo "note: install chromium (/usr/bin/chromium) for the console's browser tests"; fi; }

# The console's screenshots in docs/console/, taken by its browser tests.
screenshots: $(STAMP) chromium
	DOTDO_SCREENSHOTS=1 $(BIN)/pytest -q tests/console/test_console_browser.py

# The PostgreSQL suites need a server at $$DOTDO_TEST_PG (default 127.0.0.1:5432): start an
# installed cluster, or install one when root. Never fails here: tests/conftest.py skips
# those suites with the reason when there is none, and fails them under CI=true.
postgres:
	@$(PY) tests/pg_server.py ensure

lint: $(STAMP)
	$(BIN)/ruff check dotdo tests examples bench
	$(BIN)/ruff format --check dotdo tests examples bench
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) graphviz chromium postgres lint typecheck
	$(BIN)/pytest -q

demo: $(STAMP) graphviz
	$(BIN)/python examples/demo.py
	bash examples/demo_cli.sh

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dotdo.db demo.db
