# Two commands a newcomer needs: `make serve` and `make test`. Each installs what it needs:
# Python packages into .venv, npm packages into js/node_modules (pinned by js/package-lock.json).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VENDOR := src/snapgraph/web/static/vendor
# The explorer's browser bundles; every wheel and sdist needs them (hatch_build.py checks).
ASSETS := $(VENDOR)/react.js $(VENDOR)/react-dom.js $(VENDOR)/graphiql.js $(VENDOR)/graphiql.css

.PHONY: serve test check schema assets js bench bench-cache clean

serve: $(VENV)/.installed
	@$(MAKE) --no-print-directory assets || echo "snapgraph: npm is unavailable, so the explorer's assets are not installed: /graphql answers queries, and browsers get a page saying to install Node.js and npm and run make assets"
	$(BIN)/snapgraph serve

test: $(VENV)/.installed $(ASSETS)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

schema: $(VENV)/.installed
	$(BIN)/snapgraph schema --output schema.graphql

# The load generator is wrk, from Debian's package.
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python benchmarks/bench.py

bench-cache: $(VENV)/.installed
	$(BIN)/python benchmarks/cache_bench.py --redis $${SNAPGRAPH_BENCH_REDIS_URL:-redis://127.0.0.1:6379/7}

# The dev environment is the lock's: requirements/dev.lock pins every package of the test extra
# and all they pull in (`make lock` writes it); snapgraph itself goes in editable, over them.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "snapgraph needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# After a change to pyproject's dependencies: `make lock`, and commit the lock with it
# (tests/test_dependency_bounds.py fails while they disagree). uv keeps every pin that still
# fits; `make lock LOCK_FLAGS=--upgrade` moves them all to the newest releases.
.PHONY: lock
lock: $(VENV)/.installed
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --extra test \
		--custom-compile-command 'make lock' $(LOCK_FLAGS) pyproject.toml -o requirements/dev.lock

js: js/node_modules/.installed

js/node_modules/.installed: js/package.json js/package-lock.json
	npm ci --prefix js --no-audit --no-fund --loglevel=error
	touch $@

assets: $(ASSETS)

# The explorer's browser bundles, copied out of the pinned npm packages, each its own target
# (no marker file: a bundle deleted by hand is copied again). deploy/build.sh does the same.
$(VENDOR)/react.js: js/node_modules/.installed
	@mkdir -p $(VENDOR)
	cp js/node_modules/react/umd/react.production.min.js $@

$(VENDOR)/react-dom.js: js/node_modules/.installed
	@mkdir -p $(VENDOR)
	cp js/node_modules/react-dom/umd/react-dom.production.min.js $@

$(VENDOR)/graphiql.js: js/node_modules/.installed
	@mkdir -p $(VENDOR)
	cp js/node_modules/graphiql/graphiql.min.js $@

$(VENDOR)/graphiql.css: js/node_modules/.installed
	@mkdir -p $(VENDOR)
	cp js/node_modules/graphiql/graphiql.min.css $@

clean:
	rm -rf $(VENV) js/node_modules $(VENDOR) .pytest_cache .mypy_cache
