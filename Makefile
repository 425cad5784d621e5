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

.PHONY: install test test-fast reproduce notebooks lab clean

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

clean:
	rm -rf out .pytest_cache
