# make demo  — generate a project with default answers, train it on digits, test it, print the figures.
# make test  — the template's test suite (generation, recipes, the generated project's own tests, DDP).
# make bench  — performance ratios, side by side (not part of make test).
# All create .venv/ from nothing on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := build/demo
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: venv test demo lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: lint
	$(BIN)/python -m pytest --durations=25

lint: venv
	$(BIN)/ruff check --config pyproject.toml callbacks layers utils tests benchmarks "template/{{cookiecutter.project_slug}}"

# Not part of `make test`: ratios measured side by side (tables printed, JSON in build/bench/).
bench: venv
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/data_path.py

demo: venv
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/cookiecutter --no-input --output-dir $(DEMO) .
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e $(DEMO)/my-cnn
	cd $(DEMO)/my-cnn && \
	  start=$$(date +%s.%N) && \
	  ../../../$(BIN)/lightning fit --config configs/default.yaml --trainer.enable_progress_bar=false 2>&1 | tee fit.log && \
	  end=$$(date +%s.%N) && \
	  ../../../$(BIN)/lightning test --config configs/default.yaml --ckpt_path best --trainer.enable_progress_bar=false 2>&1 | tee test.log && \
	  echo && echo "=== demo summary ===" && \
	  echo "test accuracy : $$(grep -o 'test/acc[^0-9]*[0-9.]*' test.log | grep -o '[0-9.]*$$')" && \
	  echo "training time : $$(../../../$(BIN)/python -c "print(round($$end - $$start, 1))") s (lightning fit on $$(nproc) cores, start-up included)" && \
	  echo "W&B run       : $$(grep -oE 'run saved in [^;]*|View run at .*' fit.log | tail -1 | sed 's/^run saved in //')"

# make study NAME=regularization DATA=<folder with FashionMNIST/raw> — one study on real Fashion-MNIST, a `compare`
# run written to docs/studies/ (<= 40 min on 2 cores; the same command resumes a killed one). make studies: all.
# The reduced digits versions run in make test (benchmarks/studies.py --reduced).
DATA ?= data
.PHONY: studies study
studies: venv
	$(BIN)/python benchmarks/fashion_studies.py --data $(DATA)

study: venv
	$(BIN)/python benchmarks/fashion_studies.py --only $(NAME) --data $(DATA)

clean:
	rm -rf $(VENV) build

# make fresh-test — what CI and a new contributor see: a fresh clone of HEAD with every cache
# (pip, torch inductor, ~/.cache, HOME) pointed at empty folders, then `CI=true bash .ci/run`.
# TEST_ORDER=reverse or random:<seed>, TEST_TORCH_THREADS=2 run the suite another way.
.PHONY: fresh-test
fresh-test:
	root=$$(mktemp -d) && git clone -q . $$root/main && mkdir -p $$root/home $$root/pip $$root/inductor $$root/xdg && \
	  cd $$root/main && start=$$(date +%s) && \
	  CI=true HOME=$$root/home PIP_CACHE_DIR=$$root/pip TORCHINDUCTOR_CACHE_DIR=$$root/inductor XDG_CACHE_HOME=$$root/xdg \
	    bash .ci/run && echo "fresh-test: green in $$(( $$(date +%s) - start )) s ($$root)"
