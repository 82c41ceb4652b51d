# Every target installs what it needs into .venv first, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned to a release that exists as a CPU wheel here; an unpinned install pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# DeepSpeed builds as pure Python (its CUDA ops compile just in time on GPU machines).
export DS_BUILD_OPS ?= 0
# DeepSpeed's CPU backend compiles its shared-memory op (deepspeed_shm_comm) just in time. torch keeps such builds in
# one folder per user by default, guarded by a lock file that a killed build leaves behind, and rebuilds the op when
# another checkout's venv loads it; a stale lock hangs every later launch. Each checkout keeps its own build, made once
# at install.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions

.PHONY: demo test test-all style quality bench stress install clean

# constraints.txt pins the dependency set CI tested (setup.cfg keeps ranges for library users); without it pip's
# resolver backtracks for many minutes through sentence-transformers releases.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	rm -f $(TORCH_EXTENSIONS_DIR)/deepspeed_shm_comm/lock
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) recipes/run_hypotheses.py --config recipes/run_hypotheses.yaml

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

style: $(STAMP)
	$(VENV)/bin/ruff format density_rlhf recipes tests benchmarks
	$(VENV)/bin/ruff check --fix density_rlhf recipes tests benchmarks

quality: $(STAMP)
	$(VENV)/bin/ruff check density_rlhf recipes tests benchmarks
	$(VENV)/bin/ruff format --check density_rlhf recipes tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_density.py
	$(PY) benchmarks/bench_trainer.py

# The 2-process launch tests (DeepSpeed and the slow ZeRO-3 rehearsal included), 20 times in a row beside a
# CPU-bound process, with pass counts per test (they must never abort).
stress: $(STAMP)
	$(PY) benchmarks/stress_launch.py --runs 20 --deepspeed --slow

clean:
	rm -rf outputs .pytest_cache .ruff_cache
