PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MPLBACKEND := Agg

.PHONY: demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m sde_opt.demo --out demo_out

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --durations=25 tests --nbmake notebooks
	$(BIN)/python -m pytest -q --doctest-modules sde_opt

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) demo_out paper_figs/out
