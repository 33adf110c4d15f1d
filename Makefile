# Everything a fresh machine needs: `make serve` and `make test` create .venv and install first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
BUNDLES ?= bundles
BUNDLE ?= $(BUNDLES)
SEEDS ?= seeds
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# OpenMP threads sleep between work instead of spinning (the e5 encoder ran 10-20x slower spinning on a
# busy 2-core machine: docs/encoders.md); `news-desk` and `python -m training` set the same.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install serve serve-pg train bundle-fresh test lint fix bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on this disk; nothing later may upgrade it.
	$(PY) -m pip install --quiet torch==2.13.0
	# The ray extra too, so `make test` (and CI) run the `--engine ray` and Parquet tests; torch
	# named again so no dependency may move it.
	$(PY) -m pip install --quiet -e ".[dev,ray]" torch==2.13.0
	touch $@

# Train when no bundle exists, or retrain when $(SEEDS) no longer matches the live bundle's seed
# fingerprint (its manifest, not a stamp file); the stored corrections in $(DATA) join the seeds.
DATA ?= data
CORRECTIONS = $(if $(wildcard $(DATA)/articles.sqlite3),--corrections $(DATA),)
bundle-fresh: | $(VENV)/.installed
	@if ! ls $(BUNDLES)/*/manifest.json >/dev/null 2>&1; then \
		echo "no bundle in $(BUNDLES)/: training on $(SEEDS)/"; \
		$(PY) -m training fit --seeds $(SEEDS) --out $(BUNDLES) $(CORRECTIONS); \
	elif ! $(PY) -m training check-seeds --seeds $(SEEDS) --bundle $(BUNDLES); then \
		echo "retraining on $(SEEDS)/ (it changed since the live bundle)"; \
		$(PY) -m training fit --seeds $(SEEDS) --out $(BUNDLES) $(CORRECTIONS); \
	fi

train: install
	$(PY) -m training fit --seeds $(SEEDS) --out $(BUNDLES)

serve: install
	@if [ "$(BUNDLE)" = "$(BUNDLES)" ]; then $(MAKE) --no-print-directory bundle-fresh; fi
	NEWSDESK_BUNDLE=$(BUNDLE) $(PY) -m uvicorn service.main:app --host $(HOST) --port $(PORT)

# The same service on PostgreSQL + pgvector: a local server (the pgserver wheel) on $(PGDATA),
# created on first use and reused after; Ctrl-C stops both. Any other PostgreSQL >= 15 with
# pgvector >= 0.6: NEWSDESK_DATABASE_URL=postgresql://... make serve
PGDATA ?= data/pg
serve-pg: install
	@if [ "$(BUNDLE)" = "$(BUNDLES)" ]; then $(MAKE) --no-print-directory bundle-fresh; fi
	NEWSDESK_BUNDLE=$(BUNDLE) $(PY) -m service.pg_local serve --data $(PGDATA) --host $(HOST) --port $(PORT)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fix: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install
	$(PY) -m pip install --quiet torch==2.13.0 -e ".[dev,ray,bench]"
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
