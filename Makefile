# delphi: every target installs what it needs into .venv first (offline except for the package registry).
# Inputs are variables: e.g. `make tokenizer DATASET=../shared/data/tinystories VOCAB=4096 TOKENIZER=out/tok`.

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.delphi-installed
DELPHI    := $(BIN)/python -m delphi

OUT       ?= out/demo
CORPUS    ?= $(OUT)/corpus
DATASET   ?= $(CORPUS)
FEATURE   ?= story
SPLIT     ?= train
VOCAB     ?= 2048
TOKENIZER ?= $(OUT)/tokenizer
SEQ_LEN   ?= 128
TOKENIZED ?= $(OUT)/dataset
RECIPE    ?= recipes/demo/llama2-demo.yaml
SET       ?=
NPROC     ?= 2
PYTEST_ARGS ?=

.PHONY: install demo corpus tokenizer dataset train train-multi-cpu suite validate test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install_torch.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python scripts/install_torch.py
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The embedded synthetic corpus: written once, byte-identical for the same seed and sizes.
$(CORPUS)/train-00000.parquet: | $(STAMP)
	$(DELPHI) corpus --out-dir $(CORPUS)

corpus: $(CORPUS)/train-00000.parquet

tokenizer: $(STAMP) $(if $(filter $(CORPUS),$(DATASET)),corpus)
	$(DELPHI) tokenizer -i $(DATASET) -f $(FEATURE) -s $(SPLIT) -v $(VOCAB) --out-dir $(TOKENIZER) --overwrite

dataset: $(STAMP) $(if $(filter $(CORPUS),$(DATASET)),corpus)
	$(DELPHI) dataset -i $(DATASET) -f $(FEATURE) -t $(TOKENIZER) -l $(SEQ_LEN) --out-dir $(TOKENIZED) --overwrite

# `--set` overrides for train targets: make train RECIPE=... SET="training.max_steps=100 seq_len=64"
SET_ARGS := $(foreach s,$(SET),--set $(s))

train: $(STAMP)
	$(DELPHI) train $(RECIPE) $(SET_ARGS)

# N real CPU processes (gloo DDP); see accelerate_configs/multi-cpu.yaml for why not `--cpu`.
train-multi-cpu: $(STAMP)
	$(BIN)/accelerate launch --config_file accelerate_configs/multi-cpu.yaml --num_processes $(NPROC) \
		-m delphi.train $(RECIPE) $(SET_ARGS)

# Every recipe under SUITE (x SEEDS), to completion; rerun to finish: make suite SUITE=recipes/demo SEEDS="0 1" JOBS=2
SUITE     ?= recipes/demo
SEEDS     ?=
JOBS      ?=

# recipes/demo trains on the embedded corpus: build its tokenizer and dataset first, once
$(TOKENIZED)/train-00000.parquet: | $(STAMP)
	@$(MAKE) --no-print-directory corpus tokenizer dataset

suite: $(STAMP) $(if $(filter recipes/demo%,$(SUITE)),$(TOKENIZED)/train-00000.parquet)
	$(DELPHI) suite $(SUITE) $(if $(strip $(SEEDS)),--seeds $(SEEDS)) $(if $(strip $(JOBS)),--jobs $(JOBS)) $(SET_ARGS)

validate: $(STAMP)
	$(DELPHI) validate recipes

DEMO_RUN  ?= $(OUT)/$(basename $(notdir $(RECIPE)))

demo: $(STAMP)
	@$(MAKE) --no-print-directory corpus
	@$(MAKE) --no-print-directory tokenizer
	@$(MAKE) --no-print-directory dataset
	@$(MAKE) --no-print-directory train
	@$(DELPHI) curves $(DEMO_RUN) --out $(OUT)/curves.png
	@echo
	@echo "a story from the trained model ($(DEMO_RUN)):"
	@$(DELPHI) generate $(DEMO_RUN) -n 1 --max-new-tokens 120 --seed 0
	@echo
	@echo "demo outputs:"
	@echo "  corpus      $(CORPUS)"
	@echo "  tokenizer   $(TOKENIZER)"
	@echo "  dataset     $(TOKENIZED)"
	@echo "  checkpoints $(DEMO_RUN)/step*"
	@echo "  loss curve  $(OUT)/curves.png (numbers in $(OUT)/curves.csv)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check delphi tests benchmarks scripts
	$(BIN)/ruff format --check delphi tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format delphi tests benchmarks scripts
	$(BIN)/ruff check --fix delphi tests benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenize_dataset.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf out
