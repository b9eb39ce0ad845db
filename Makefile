# shakelab: two commands on a fresh machine with Python 3.11+ and make:
#   make demo   set up .venv and run the main job offline on the embedded local server
#   make test   set up .venv and run the whole suite (tests + notebooks)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench lab serve system-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Real programs the tests drive: curl (the API page's commands), Chromium (the browser test).
system-deps:
	@command -v curl >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq curl chromium chromium-driver >/dev/null; }

demo: setup
	$(BIN)/shakelab demo

test: setup system-deps
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

serve: setup
	$(BIN)/shakelab serve

clean:
	rm -rf $(VENV) out build *.egg-info
