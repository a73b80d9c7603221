# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv from requirements.txt first and
# install the project into it (editable: `import cnn` finds this checkout from anywhere).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test lint bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) train.py --config=configs/default.py --workdir=$(DEMO_DIR)
	$(PY) eval.py --workdir=$(DEMO_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" -n 2 --durations=15

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/precision.py

clean:
	rm -rf $(VENV) runs .pytest_cache
