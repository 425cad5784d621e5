# segros — two commands matter: `make reproduce` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segros-installed
# the run store `make reproduce` reads and fills: `runs` (committed) reuses every finished run;
# `make reproduce RUNS=out/runs` starts from an empty store and recomputes everything
RUNS   ?= runs
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install test test-fast reproduce notebooks lab parity open-clip-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[notebooks,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (segros)"
	touch $(STAMP)

## unit, property and end-to-end tests, then the notebooks against their committed outputs
test: install
	$(BIN)/python -m pytest tests -q
	@if [ -n "$(NOTEBOOKS)" ]; then \
	  $(BIN)/python -m pytest -q --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:randomly $(NOTEBOOKS); \
	else echo "no notebooks yet"; fi

test-fast: install
	$(BIN)/python -m pytest tests -q -m "not slow"

## run every notebook at its small defaults with papermill and rebuild figures/
reproduce: install
	@mkdir -p out/notebooks
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(BIN)/python -m papermill --cwd notebooks -k python3 "$$nb" "out/$$nb" -p runs_dir "$(RUNS)" || exit 1; \
	done
	@echo "figures written to figures/; executed notebooks in out/notebooks/"

## maintainers: re-execute the committed notebooks in place (their outputs are nbval's reference)
notebooks: install
	$(BIN)/python -m segros.notebooks $(NOTEBOOKS)

lab: install
	$(BIN)/jupyter lab notebooks

## parity of the real adapters with the official code at tiny scale (tests/parity/). Give the
## checkouts: make parity HARMON_REPO=... SHOWO_REPO=... RECA_REPO=... OPENUNI_REPO=... GENEVAL_REPO=...
## (a family without its checkout is skipped); each family's pinned env is built once under .parity/
PARITY_ENVS ?= .parity
parity: install
	@for fam in harmon showo openuni; do \
	  [ -x "$(PARITY_ENVS)/$$fam/bin/python" ] || bash tests/parity/setup_$${fam}_env.sh "$(PARITY_ENVS)/$$fam" || exit 1; \
	done
	SEGROS_PARITY_HARMON_REPO="$(HARMON_REPO)" SEGROS_PARITY_HARMON_PYTHON="$(abspath $(PARITY_ENVS))/harmon/bin/python" \
	SEGROS_PARITY_SHOWO_REPO="$(SHOWO_REPO)" SEGROS_PARITY_SHOWO_PYTHON="$(abspath $(PARITY_ENVS))/showo/bin/python" \
	SEGROS_PARITY_SHOWO_RECA_REPO="$(RECA_REPO)" \
	SEGROS_PARITY_OPENUNI_REPO="$(OPENUNI_REPO)" SEGROS_PARITY_OPENUNI_PYTHON="$(abspath $(PARITY_ENVS))/openuni/bin/python" \
	SEGROS_PARITY_GENEVAL_REPO="$(GENEVAL_REPO)" \
	  $(BIN)/python -m pytest tests/parity -s -q -rs

## the GenEval scorer's open_clip colour backend, in an environment where open_clip imports
## (tests/test_geneval_detect.py skips those tests elsewhere); the env is built once under .parity/
open-clip-check:
	@[ -x "$(PARITY_ENVS)/open_clip/bin/python" ] || bash tests/parity/setup_open_clip_env.sh "$(PARITY_ENVS)/open_clip" || exit 1
	PYTHONPATH="$(CURDIR)" $(PARITY_ENVS)/open_clip/bin/python -m pytest tests/test_geneval_detect.py -q -rs -k "open_clip or same_weights"

clean:
	rm -rf out .pytest_cache .parity
