# delphi: every target installs what it needs into .venv first (offline except for the package registry).
# Inputs are variables: e.g. `make tokenizer DATASET=../shared/data/tinystories VOCAB=4096 TOKENIZER=out/tok`.
# Every step reads what the step before it wrote under the same variables: `make demo OUT=x` reads and
# writes only under x, and `make train` trains on the TOKENIZER and TOKENIZED you gave (see TRAIN_SET).

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
RUN_DIR   ?= $(OUT)/$(basename $(notdir $(RECIPE)))
SET       ?=
NPROC     ?= 2
PYTEST_ARGS ?=

.PHONY: install demo corpus tokenizer dataset train train-multi-cpu suite validate test test-fast test-numerics test-compat test-tf4 test-interp lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install_torch.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python scripts/install_torch.py
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,eval]"
	touch $@

# The embedded synthetic corpus: written once, byte-identical for the same seed and sizes.
$(CORPUS)/train-00000.parquet: | $(STAMP)
	$(DELPHI) corpus --out-dir $(CORPUS)

corpus: $(CORPUS)/train-00000.parquet

# `make tokenizer` / `make dataset` always (re)build; the demo builds them only when missing.
tokenizer: $(STAMP) $(if $(filter $(CORPUS),$(DATASET)),corpus)
	$(DELPHI) tokenizer -i $(DATASET) -f $(FEATURE) -s $(SPLIT) -v $(VOCAB) --out-dir $(TOKENIZER) --overwrite

dataset: $(STAMP) $(if $(filter $(CORPUS),$(DATASET)),corpus)
	$(DELPHI) dataset -i $(DATASET) -f $(FEATURE) -t $(TOKENIZER) -l $(SEQ_LEN) --out-dir $(TOKENIZED) --overwrite

$(TOKENIZER)/tokenizer.json: | $(STAMP) $(if $(filter $(CORPUS),$(DATASET)),$(CORPUS)/train-00000.parquet)
	$(DELPHI) tokenizer -i $(DATASET) -f $(FEATURE) -s $(SPLIT) -v $(VOCAB) --out-dir $(TOKENIZER) --overwrite

$(TOKENIZED)/delphi_dataset.json: | $(STAMP) $(TOKENIZER)/tokenizer.json
	$(DELPHI) dataset -i $(DATASET) -f $(FEATURE) -t $(TOKENIZER) -l $(SEQ_LEN) --out-dir $(TOKENIZED) --overwrite

# `--set` overrides for train targets: make train RECIPE=... SET="training.max_steps=100 seq_len=64"
SET_ARGS := $(foreach s,$(SET),--set $(s))
# The variables you give (command line or environment) reach the recipe: TOKENIZER -> tokenizer,
# TOKENIZED -> data.path, RUN_DIR -> out_dir, and OUT -> all three (their defaults hang off it).
# Variables left at their defaults leave the recipe as written.
given = $(filter command environment,$(firstword $(origin $(1))))
TRAIN_SET := $(if $(or $(call given,TOKENIZER),$(call given,OUT)),--set tokenizer=$(TOKENIZER)) \
             $(if $(or $(call given,TOKENIZED),$(call given,OUT)),--set data.path=$(TOKENIZED)) \
             $(if $(or $(call given,RUN_DIR),$(call given,OUT)),--set out_dir=$(RUN_DIR))
# A suite takes the same inputs; each of its runs goes to OUT/{name} (the recipe's name, with -seed{k}).
SUITE_SET := $(if $(or $(call given,TOKENIZER),$(call given,OUT)),--set tokenizer=$(TOKENIZER)) \
             $(if $(or $(call given,TOKENIZED),$(call given,OUT)),--set data.path=$(TOKENIZED)) \
             $(if $(call given,OUT),--set 'out_dir=$(OUT)/{name}')

train: $(STAMP)
	$(DELPHI) train $(RECIPE) $(TRAIN_SET) $(SET_ARGS)

# N real CPU processes (gloo DDP); see accelerate_configs/multi-cpu.yaml for why not `--cpu`.
train-multi-cpu: $(STAMP)
	$(BIN)/accelerate launch --config_file accelerate_configs/multi-cpu.yaml --num_processes $(NPROC) \
		-m delphi.train $(RECIPE) $(TRAIN_SET) $(SET_ARGS)

# Every recipe under SUITE (x SEEDS), to completion; rerun to finish: make suite SUITE=recipes/demo SEEDS="0 1" JOBS=2
SUITE     ?= recipes/demo
SEEDS     ?=
JOBS      ?=

# recipes/demo trains on the embedded corpus: its tokenizer and dataset are built first when missing
suite: $(STAMP) $(if $(filter recipes/demo%,$(SUITE)),$(TOKENIZED)/delphi_dataset.json)
	$(DELPHI) suite $(SUITE) $(if $(strip $(SEEDS)),--seeds $(SEEDS)) $(if $(strip $(JOBS)),--jobs $(JOBS)) $(SUITE_SET) $(SET_ARGS)

# validate checks the inputs a recipe names as train does: recipes/demo's are built first when missing
validate: $(STAMP) $(TOKENIZED)/delphi_dataset.json
	$(DELPHI) validate recipes

# Run twice, it only redoes what is missing: an existing corpus, tokenizer and dataset are kept, and a
# finished run is left as it is (`delphi train` says it is complete); the curve is redrawn.
demo: $(STAMP)
	@$(MAKE) --no-print-directory $(CORPUS)/train-00000.parquet $(TOKENIZER)/tokenizer.json \
		$(TOKENIZED)/delphi_dataset.json
	@$(MAKE) --no-print-directory train TOKENIZER=$(TOKENIZER) TOKENIZED=$(TOKENIZED) RUN_DIR=$(RUN_DIR)
	@$(DELPHI) curves $(RUN_DIR) --out $(OUT)/curves.png
	@echo
	@echo "a story from the trained model ($(RUN_DIR)):"
	@$(DELPHI) generate $(RUN_DIR) -n 1 --max-new-tokens 120 --seed 0
	@echo
	@echo "demo outputs:"
	@echo "  corpus      $(CORPUS)"
	@echo "  tokenizer   $(TOKENIZER)"
	@echo "  dataset     $(TOKENIZED)"
	@echo "  checkpoints $(RUN_DIR)/step*"
	@echo "  loss curve  $(OUT)/curves.png (numbers in $(OUT)/curves.csv)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The cross-layout and cross-path comparisons (-m numerics) under each CPU kernel level torch offers here
# (ATEN_CPU_CAPABILITY, with MKL and oneDNN capped alike) and thread count, with each comparison's worst
# measured value against its tolerance: make test-numerics CAPABILITIES="default avx2" THREADS="1 2 4" REPEAT=3
CAPABILITIES ?=
THREADS   ?= 1
REPEAT    ?= 1
test-numerics: $(STAMP)
	$(BIN)/python scripts/numerics_matrix.py $(if $(strip $(CAPABILITIES)),--capabilities $(CAPABILITIES)) \
		--threads $(THREADS) --repeat $(REPEAT) $(if $(strip $(PYTEST_ARGS)),-- $(PYTEST_ARGS))

# The other end of the tested range: the newest transformers and accelerate that pyproject.toml allows,
# in a separate venv, running the fast tests (`make test` runs the oldest, from constraints.txt).
COMPAT_VENV ?= .venv-compat
test-compat:
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python scripts/install_torch.py
	$(COMPAT_VENV)/bin/python -m pip install --quiet -e ".[dev,eval]"
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade "transformers<5.25" "accelerate<2"
	$(COMPAT_VENV)/bin/python -c "import transformers, accelerate; print('test-compat: transformers', \
		transformers.__version__, 'accelerate', accelerate.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

# delphi's checkpoints in transformers 4 (tests/test_transformers4.py): .venv trains tiny runs and computes token
# ids and logits, and a venv with only torch (the same as .venv's), transformers 4 and safetensors loads the same
# folders and must agree. TF4_TRANSFORMERS picks the release (README: "Using checkpoints in other tools").
TF4_VENV ?= .venv-tf4
TF4_TRANSFORMERS ?= 4.57.6
test-tf4: $(STAMP)
	test -x $(TF4_VENV)/bin/python || $(PYTHON) -m venv $(TF4_VENV)
	$(TF4_VENV)/bin/python scripts/install_torch.py
	$(TF4_VENV)/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch').split('+')[0])" \
		> $(TF4_VENV)/torch-pin.txt
	$(TF4_VENV)/bin/python -m pip install --quiet -c $(TF4_VENV)/torch-pin.txt "transformers==$(TF4_TRANSFORMERS)" safetensors
	DELPHI_TF4_PYTHON=$(TF4_VENV)/bin/python $(BIN)/python -m pytest tests/test_transformers4.py -q -p no:cacheprovider $(PYTEST_ARGS)

# delphi's checkpoints in TransformerLens, nnsight and lm-evaluation-harness (tests/test_interp_tools.py): a venv
# of their own (delphi with the `interp` extra and .venv's torch), since they bring many packages of their own.
INTERP_VENV ?= .venv-interp
test-interp:
	test -x $(INTERP_VENV)/bin/python || $(PYTHON) -m venv $(INTERP_VENV)
	$(INTERP_VENV)/bin/python scripts/install_torch.py
	$(INTERP_VENV)/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch').split('+')[0])" \
		> $(INTERP_VENV)/torch-pin.txt
	$(INTERP_VENV)/bin/python -m pip install --quiet -c constraints.txt -c $(INTERP_VENV)/torch-pin.txt -e ".[interp]" "pytest>=8"
	$(INTERP_VENV)/bin/python -c "from importlib.metadata import version as v; print('test-interp:', *(f'{p} {v(p)}' \
		for p in ('transformers', 'transformer-lens', 'nnsight', 'lm-eval')))"
	DELPHI_INTERP_TOOLS=1 $(INTERP_VENV)/bin/python -m pytest tests/test_interp_tools.py -q -p no:cacheprovider $(PYTEST_ARGS)

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
