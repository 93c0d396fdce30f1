# Two commands matter: `make run` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast venv venv-dev migrate bench clean

# A stamp per requirements file: reinstall only when the file changes.
$(BIN)/.stamp-runtime: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.stamp-dev: requirements-dev.txt requirements.txt $(BIN)/.stamp-runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.stamp-runtime
venv-dev: $(BIN)/.stamp-dev

migrate: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin

run: migrate
	@echo ""
	@echo "ModelXRef: http://$(HOST):$(PORT)/  (web + hashing and lookups workers; Ctrl-C stops them all)"
	@$(BIN)/python manage.py model_roots
	@echo ""
	PORT=$(PORT) HOST=$(HOST) $(BIN)/honcho start

test: venv-dev
	$(BIN)/python -m pytest

# The edit loop: everything but the end-to-end, browser and long generated-input tests (`make test` runs all).
test-fast: venv-dev
	$(BIN)/python -m pytest -m "not e2e and not browser and not slow"

# All benchmarks; each prints its table (docs/BENCHMARKS.md holds the last measured ones).
bench: venv-dev
	$(BIN)/python bench/hashing.py
	$(BIN)/python bench/fingerprint.py
	$(BIN)/python bench/convert.py
	$(BIN)/python bench/register.py
	$(BIN)/python bench/identify.py
	$(BIN)/python bench/file_list.py
	$(BIN)/python bench/duplicates.py
	$(BIN)/python bench/hostile_memory.py
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) var .pytest_cache

.PHONY: demo bench-identify

# Offline, end to end: a tiny model library, FakeCivitai + FakeHub, then web + worker
# as `make run` starts them; identifies the library and keeps running until Ctrl-C.
demo: migrate
	PORT=$(PORT) HOST=$(HOST) $(BIN)/python -m tests.fakes.demo

# Civitai requests needed to identify 1,000 files (and to identify them again).
bench-identify: venv
	$(BIN)/python bench/identify.py
