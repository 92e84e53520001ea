# The two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lock bench-ingest clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Serve on http://127.0.0.1:8000 (embedded Postgres under ./.tally unless TALLY_DATABASE_URL is set).
run: install
	$(BIN)/tally migrate
	$(BIN)/tally serve

## The whole suite (embedded Postgres, or TALLY_TEST_DATABASE_URL when set).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Re-resolve requirements.lock from pyproject.toml (needs network access to PyPI).
lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --generate-hashes --python-version 3.11 -o requirements.lock

## Ingest throughput against raw COPY on the same machine (see README).
bench-ingest: install
	$(BIN)/python -m loadtests.bench_ingest

clean:
	rm -rf $(VENV) .pytest_cache
