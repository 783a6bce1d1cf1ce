# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create ./.venv on first use (CPU PyTorch; see README for GPU installs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# verl pins transformers < 5.11 (TRL needs newer): its adapter is tested in a virtualenv of its own.
VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed
VERL_TESTS := tests/test_verl_contract.py tests/test_verl_mara.py tests/test_verl_settings.py tests/test_verl_transferqueue.py tests/test_verl_example.py

.PHONY: install browser demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,llm,chem,semantic,dock,ray,tensorboard]"
	$(BIN)/pip install --quiet --no-deps molsets==0.3.1
	touch $(STAMP)

$(VERL_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install --quiet --upgrade pip
	$(VERL_VENV)/bin/pip install --quiet torch==2.13.0
	$(VERL_VENV)/bin/pip install --quiet -e ".[verl,dev]"
	touch $(VERL_STAMP)

install: $(STAMP)

# The page tests drive a real headless browser: Debian's chromium and its chromedriver (selenium is in
# [dev]). Installed when missing and this is root with apt-get; elsewhere those tests skip and say why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "could not install chromium and chromium-driver: the browser tests will skip"; \
	else echo "no chromium/chromedriver and no root apt-get: the browser tests will skip (install chromium and chromium-driver)"; fi

demo: $(STAMP)
	$(BIN)/mara targets --rewards 0 1 1 --ref-probs 0.68 0.30 0.02 --labels wrong common rare --beta 0.001 1 --tau 0.5 --plot runs/didactic/targets.png
	$(BIN)/mara reproduce didactic --out runs/didactic

test: $(STAMP) $(VERL_STAMP) browser
	$(BIN)/python -m pytest
	$(VERL_VENV)/bin/python -m pytest $(VERL_TESTS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_augment.py
	$(BIN)/python benchmarks/bench_toy.py
	$(BIN)/python benchmarks/bench_diagnose.py

clean:
	rm -rf $(VENV) $(VERL_VENV) runs
