# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU build of torch lies on local disk; install it first so nothing asks for a CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test install dev tools lint format clean translations

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Tools the tests drive for real (tests/serving/test_bench.py runs wrk; the browser tests,
# tests/browser.py, drive Debian's chromium through Playwright, which never downloads a browser).
# Debian's packages; as root (CI, this project's machines) they are installed, elsewhere the
# command to run is printed. Then Apache Kafka's jars for the Kafka broker tests (.ci/kafka/fetch,
# from Maven Central into .ci/kafka/lib/); where Maven Central cannot be reached those tests skip,
# saying so.
TOOLS := wrk chromium
tools:
	@for tool in $(TOOLS); do command -v $$tool >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq $$tool >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq $$tool >/dev/null; }; \
	  else echo "install $$tool for its tests: sudo apt-get install -y $$tool"; fi; \
	done
	@.ci/kafka/fetch || echo "kafka: jars not fetched; the Kafka broker tests will skip"

install: $(VENV)/.installed

dev: $(VENV)/.dev tools

demo: $(VENV)/.installed
	$(BIN)/tailor demo

# pytest's exit code passes through make: 5 (no tests collected) fails like any failure.
test: $(VENV)/.dev tools
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The consent page's catalogues (README, "Privacy and consent"): the texts of its templates and
# of the policy's purpose descriptions into messages.pot, then merged into every language's .po
# (new texts empty, changed ones fuzzy: a translator fills them in). The service compiles the .po
# files itself; no .mo file is built or committed.
LOCALE := serving/privacy/locale
translations: $(VENV)/.installed
	$(BIN)/pybabel -q extract -F serving/privacy/babel.cfg --no-location --sort-output \
	  --project=Tailor --copyright-holder="Tailor contributors" -o $(LOCALE)/messages.pot .
	$(BIN)/pybabel -q update -i $(LOCALE)/messages.pot -d $(LOCALE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
