# gpt2lab: Kconfig -> .config -> build/config.py + build/train.args -> make train.
# Every recipe is one line calling one script; `make help` lists the targets.
#
# Variables: TRACKER=none|trackio|wandb|trackio,wandb (with defconfig-<name>),
# ARGS="..." (extra flags for train, test, bench, wandb-sync), PORT (trackio-show),
# KCONFIG_CONFIG and BUILD (where .config and the generated files live, so
# tests can point them at a scratch folder), DEFCONFIG (savedefconfig's output),
# TORCH_SPEC (the torch that scripts/setup_venv.py installs, e.g. a CUDA build);
# sample: CKPT; export: CKPT, OUT; eval: CKPT, TASKS; sweep: SWEEP (a sweep file) or BASE, VARY, SEEDS; JOBS, NAME, SWEEPS (the
# sweeps' folder); wheelhouse: PYTHON_VERSION, WHEELHOUSE_ONLY; report: SWEEP_DIR, RUNS, REPORT_DIR, BASELINE, TRACK;
# reproduce: RUN, STRICT.

SYSTEM_PYTHON ?= python3
PYTHON := .venv/bin/python
VENV_STAMP := .venv/.installed
KCONFIG_CONFIG ?= .config
BUILD ?= build
DEFCONFIG ?= defconfig
TRACKER ?=
PORT ?=
ARGS ?=
SWEEPS ?= sweeps
JOBS ?= 1
export KCONFIG_CONFIG

# Every user value reaches its script as one shell word holding exactly the
# string given: $(call arg,RUN) is RUN's unexpanded value (so make runs no
# $(...) in it either) in single quotes, each ' in it written '\''.  Given
# as --flag=VALUE, a value starting with "-" is not taken for an option.
# $(call args,RUNS): a space-separated list, one such word per item.
shell-word = '$(subst ','\'',$(1))'
arg = $(call shell-word,$(value $(1)))
args = $(foreach word,$(value $(1)),$(call shell-word,$(word)))

KCONFIG_FILES := $(wildcard Kconfig Kconfig.* */Kconfig */Kconfig.* lib/*/Kconfig gpt2/*/Kconfig)
GENERATOR := scripts/genconfig.py lib/kconfig.py lib/options.py $(wildcard scripts/templates/*.j2)
OUTPUTS := $(BUILD)/config.py $(BUILD)/train.args
CONFIGURE := $(PYTHON) -m scripts.configure --config $(KCONFIG_CONFIG) --build-dir $(BUILD)

.DEFAULT_GOAL := help
.PHONY: help menuconfig list-defconfigs savedefconfig olddefconfig listnewconfig example-config genconfig \
	train sample export eval sweep report reproduce trackio-show wandb-sync bench gpu-check wheelhouse test clean venv

help: ## list the targets, one line each
	@$(SYSTEM_PYTHON) scripts/make_help.py Makefile

menuconfig: | $(VENV_STAMP) ## edit .config in a terminal menu (S saves, Q quits), then regenerate build/
	@$(CONFIGURE) menuconfig

defconfig-%: | $(VENV_STAMP) ## .config from gpt2/defconfigs/<name> (or <name>-<tracker>) plus defaults [TRACKER=...]
	@$(CONFIGURE) defconfig $* --tracker=$(call arg,TRACKER)

list-defconfigs: | $(VENV_STAMP) ## list the presets with a one-line description each
	@$(CONFIGURE) list-defconfigs

savedefconfig: | $(VENV_STAMP) ## write ./defconfig: only the options that differ from the defaults
	@$(CONFIGURE) savedefconfig --out $(DEFCONFIG)

olddefconfig: | $(VENV_STAMP) ## set options missing from .config (or all, with no .config) to defaults
	@$(CONFIGURE) olddefconfig

listnewconfig: | $(VENV_STAMP) ## list the options .config does not set yet
	@$(CONFIGURE) listnewconfig

example-config: | $(VENV_STAMP) ## regenerate .config.example from the Kconfig tree (a test fails when it is stale)
	@$(CONFIGURE) example

genconfig: $(OUTPUTS) ## regenerate build/config.py and build/train.args if .config changed

# No .config yet: start from the Kconfig defaults (with a one-line notice).
$(KCONFIG_CONFIG): | $(VENV_STAMP)
	@$(CONFIGURE) --config-only olddefconfig

$(OUTPUTS) &: $(KCONFIG_CONFIG) $(KCONFIG_FILES) $(GENERATOR) | $(VENV_STAMP)
	@$(PYTHON) -m scripts.genconfig --config $(KCONFIG_CONFIG) --build-dir $(BUILD)

train: $(OUTPUTS) | $(VENV_STAMP) ## train with build/train.args (torchrun when NPROC_PER_NODE x NNODES > 1) [ARGS=...]
	@$(PYTHON) -m scripts.launch --build-dir $(BUILD) -- $(ARGS)

sample: | $(VENV_STAMP) ## print text from a checkpoint with .config's Sampling options [CKPT=OUT_DIR/best.pt, ARGS=...]
	@$(PYTHON) -m scripts.sample --config $(KCONFIG_CONFIG) --ckpt=$(call arg,CKPT) $(ARGS)

export: | $(VENV_STAMP) ## a Hugging Face folder from a checkpoint [CKPT=OUT_DIR/best.pt, OUT=export/, ARGS="--overwrite --export-hub-repo user/repo"]
	@$(PYTHON) -m scripts.export $(if $(wildcard $(KCONFIG_CONFIG)),--config=$(call arg,KCONFIG_CONFIG)) --ckpt=$(call arg,CKPT) $(if $(value OUT),--export-dir=$(call arg,OUT)) $(ARGS)

eval: | $(VENV_STAMP) ## score a checkpoint: HellaSwag, perplexity, lm-evaluation-harness [CKPT=OUT_DIR/best.pt, TASKS=hellaswag,ppl,harness, ARGS=...]
	@$(PYTHON) -m scripts.eval --config $(KCONFIG_CONFIG) --ckpt=$(call arg,CKPT) --tasks=$(call arg,TASKS) $(ARGS)

trackio-show: $(OUTPUTS) | $(VENV_STAMP) ## open the Trackio dashboard of this project [PORT=...]
	@$(PYTHON) -m scripts.tracking.trackio_show --build-dir $(BUILD) --port=$(call arg,PORT)

wandb-sync: | $(VENV_STAMP) ## upload offline W&B runs [ARGS=...]
	@$(PYTHON) -m scripts.tracking.wandb_sync $(ARGS)

reproduce: | $(VENV_STAMP) ## re-create a tracked run from its record [RUN=name|id|out-dir, STRICT=1]
	@$(PYTHON) -m scripts.experiments.reproduce $(if $(value STRICT),--strict) $(ARGS) -- $(call arg,RUN)

sweep: | $(VENV_STAMP) ## run every point of a sweep, then its report [SWEEP=file | BASE= VARY= SEEDS=; JOBS=, NAME=, ARGS=]
	@$(PYTHON) -m scripts.experiments.sweep --file=$(call arg,SWEEP) --base=$(call arg,BASE) --vary=$(call arg,VARY) --seeds=$(call arg,SEEDS) --jobs=$(call arg,JOBS) --name=$(call arg,NAME) --root=$(call arg,SWEEPS) -- $(ARGS)

report: | $(VENV_STAMP) ## report.md, report.csv and plots of a sweep or of runs [SWEEP_DIR=dir | RUNS="dirs" REPORT_DIR=dir; BASELINE=point, TRACK=1]
	@$(PYTHON) -m scripts.experiments.report $(if $(value SWEEP_DIR),--sweep=$(call arg,SWEEP_DIR)) $(if $(value RUNS),--runs $(call args,RUNS)) $(if $(value REPORT_DIR),--out=$(call arg,REPORT_DIR)) $(if $(value BASELINE),--baseline=$(call arg,BASELINE)) $(if $(value TRACK),--track)

bench: | $(VENV_STAMP) ## run the benchmark [ARGS=...]
	@$(PYTHON) -m scripts.bench.bench $(ARGS)

gpu-check: | $(VENV_STAMP) ## on a CUDA machine: matmul, 124M bench, preset run, kill -9 + resume, DDP -> gpu-check.json [ARGS=...]
	@$(PYTHON) -m scripts.gpu_check $(ARGS)

wheelhouse: ## wheels + corpus for an air-gapped PyTorch machine -> wheelhouse/ (docs/airgapped.md) [PYTHON_VERSION=3.12, WHEELHOUSE_ONLY="..."]
	@$(SYSTEM_PYTHON) -m scripts.wheelhouse $(if $(value PYTHON_VERSION),--python-version=$(call arg,PYTHON_VERSION)) --only=$(call arg,WHEELHOUSE_ONLY)

test: | $(VENV_STAMP) ## run the test suite [ARGS="-x -q tests/test_config.py"]
	@$(PYTHON) -m pytest $(ARGS)

# Runs every time, not only when the stamp is stale: `make venv TORCH_SPEC=...`
# must reach an existing .venv (setup_venv.py is safe to run again).
venv: ## create or update .venv and install gpt2lab (TORCH_SPEC=... picks the torch build)
	@$(SYSTEM_PYTHON) scripts/setup_venv.py

$(VENV_STAMP): pyproject.toml
	@$(SYSTEM_PYTHON) scripts/setup_venv.py

clean: ## remove the generated files (build/)
	rm -rf -- $(BUILD)
