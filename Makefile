PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MPLBACKEND := Agg
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test docs bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m sde_opt.demo --out demo_out

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --durations=25 tests --nbmake notebooks
	$(BIN)/python -m pytest -q --doctest-modules sde_opt --doctest-glob=README.md README.md
	$(BIN)/python -m mkdocs build --strict --quiet

# the documentation site in site/ (API reference, notebooks run for their figures, guides); warnings are errors
docs: $(VENV)/.installed-test
	SDE_OPT_DOCS_EXECUTE=true $(BIN)/python -m mkdocs build --strict

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) demo_out paper_figs/out site .cache
