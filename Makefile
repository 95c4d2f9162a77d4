# The commands of the README: `make demo` (train, pictures, sample), `make test` (the whole suite, as CI runs it)
# and `make test-fast` (all but the tests marked `process`: fresh interpreters, torchrun, torch.compile; or `slow`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test test-fast clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.4"

# The main job needs the package alone; the tests also need the dev extras (pytest, scipy, diffusers, tensorboard).
$(VENV)/.installed-main: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed-main

demo: $(VENV)/.installed-main
	mkdir -p $(dir $(RUN))
	$(BIN)/gaussdiff train --data moons --out $(RUN) --time-budget 120 --overwrite
	$(BIN)/gaussdiff sample $(RUN) -n 5000 --out $(RUN)/samples.npy
	@echo "pictures in $(RUN)/pictures/"

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not process and not slow"

clean:
	rm -rf $(VENV) runs
