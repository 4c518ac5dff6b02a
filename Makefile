# Two entry points (see README): `make demo` runs the whole path, `make test` the test suite.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test lint clean

$(BIN)/l2i: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first (a GPU user installs the CUDA build of torch before `make install`).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/l2i

install: $(BIN)/l2i

demo: install
	$(BIN)/l2i demo --output_folder runs/demo

test: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/python -m pytest -q -n 2 tests

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs build src/*.egg-info
