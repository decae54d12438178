# Two entry points on a fresh machine (Python 3.10+; torch's CPU build is pinned in constraints.txt):
#   make run    set up .venv and run the main job (the five-stage DAG on scikit-learn's digits)
#   make test   set up .venv with test extras and the example plugin, then run the tests
PYTHON ?= python3
VENV ?= .venv
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	$(VENV)/bin/pip install -q -c constraints.txt ./tests/plugin_example
	touch $@

.PHONY: setup run run-mnist test test-all
setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/kedro run

run-mnist: setup
	$(VENV)/bin/kedro run --env mnist

test: setup
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --durations=15

test-all: setup
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -m ""
