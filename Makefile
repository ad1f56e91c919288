# Set-up and everyday commands. Every target creates .venv and installs the project first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PAPER ?=
STEPS ?=
ABLATE_ARGS ?=
# test processes (pytest-xdist; 0 = one process); each runs torch on one thread
TEST_WORKERS ?= 2

.PHONY: install install-dev train eval test test-all mutants lint format bench gpu-check ablate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# make train's recipe for this CPU: bf16 with channels-last weights where oneDNN has AMX tiles
# (conf/experiment/cpu_amx.yaml), the fp32 defaults elsewhere; TRAIN_RECIPE= keeps fp32 anywhere
TRAIN_RECIPE ?= $(shell $(BIN)/python -c "from vos.inference.precision import cpu_has_usable_amx; print('experiment=cpu_amx' if cpu_has_usable_amx() else '')" 2>/dev/null)

train: install          ## STM on the generated dataset, CPU-sized (ARGS="key=value ...")
	@echo "make train: recipe: $(if $(TRAIN_RECIPE),$(TRAIN_RECIPE) (this CPU has AMX tiles; TRAIN_RECIPE= for fp32),the fp32 defaults)"
	$(BIN)/python -m vos.train $(TRAIN_RECIPE) $(ARGS)

eval: install           ## make eval ARGS="ckpt_path=... output_dir=..."
	$(BIN)/python -m vos.eval $(ARGS)

test: install-dev       ## the default suite (slow tests excluded; TEST_WORKERS=2 processes)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(ARGS)

test-all: install-dev   ## every test, slow ones included
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "" $(ARGS)

mutants: install-dev    ## wrong edits of the readers the tests must catch (ARGS="--only ID --jobs 2")
	$(BIN)/python tests/run_mutants.py $(ARGS)

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install          ## make bench ARGS="inference --json"
	$(BIN)/python -m vos.bench $(if $(ARGS),$(ARGS),inference)

gpu-check: install-dev  ## on a CUDA GPU (<10 min): kernel tests on the device, then vos.bench ops --roofline (triton, flex, reference) into outputs/gpu_check/ (ARGS="--dtypes fp32 bf16")
	@$(BIN)/python tests/gpu_check.py $(ARGS)

ablate: install         ## make ablate PAPER=<reader with experiments/<reader>/ablation.yaml>|all [STEPS=N] [ABLATE_ARGS="--videos 4 -- key=value"]
	$(if $(PAPER),,$(error PAPER is required: make ablate PAPER=<reader>|all (experiments/*/ablation.yaml)))
	$(BIN)/python -m vos.ablate $(PAPER) $(if $(STEPS),--steps $(STEPS)) $(ABLATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
