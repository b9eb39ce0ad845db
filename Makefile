# shakelab: two commands on a fresh machine with Python 3.11+ and make:
#   make demo   set up .venv and run the main job offline on the embedded local server
#   make test   set up .venv, run the quality gate (make lint) and the whole suite (tests + notebooks)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup models devset demo lint test bench lab serve system-deps clean

setup: $(STAMP) models

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# The music detector's CNN weights, taken once from the inaSpeechSegmenter wheel on PyPI
# (checksum pinned) into the user cache; a no-op when they are already there.
models: $(STAMP)
	$(BIN)/shakelab models fetch

# The labelled development sets that benchmarks/bench_detector.py scores: `dev` (16 min) and
# `broadcast` (67 min, every speech/music source tagged for leave-one-source-out); each is
# rebuilt only when tools/devset.py changed.
devset: out/devset/manifest.csv out/broadcast/manifest.csv

out/devset/manifest.csv out/broadcast/manifest.csv: tools/devset.py | setup system-deps
	$(BIN)/python -m tools.devset $(@D) --split $(if $(findstring broadcast,$@),broadcast,dev)

# Real programs the tests drive: curl (the API page's commands), Chromium (the browser test),
# espeak-ng, flite, fluidsynth, a General MIDI soundfont and the licensed voice prompts and
# music of the detector's development sets (tools.devset.BROADCAST_DEBS).
APT_PACKAGES := curl chromium espeak-ng fluidsynth timgm6mb-soundfont flite alsa-utils sound-theme-freedesktop \
  asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-es-wav asterisk-moh-opsound-wav asc-music
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  echo "apt-get install $$missing"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/shakelab demo

# The quality gate: ruff (with the numpydoc docstring rules) on the code, mypy on the package
# (both configured in pyproject.toml), and every docstring example of the package run as a doctest.
lint: setup
	$(BIN)/ruff check shakelab tests benchmarks tools
	$(BIN)/mypy
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules shakelab

test: lint system-deps
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $$(test "$$(id -u)" = 0 && echo --allow-root)

serve: setup
	$(BIN)/shakelab serve

clean:
	rm -rf $(VENV) out build *.egg-info
