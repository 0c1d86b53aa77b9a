# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: apps run test test-deps lint typecheck unit bench bench-rest bench-bundles bench-search bench-workers bench-auth \
	bench-consent bench-subscriptions bench-validation clean

# `make run` needs only the server and its embedded database; the test tools (pytest, mypy,
# ruff, the SMART clients, Playwright) come with the `dev` extra, installed by `make test`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(DEV_STAMP)

run: $(STAMP) apps
	$(BIN)/fhir-server serve

# The server's own SMART apps (fhir_server/web_apps.py): TypeScript compiled by npm into
# apps/dist/ (not committed), with the vendored browser libraries, served under /apps/.
APPS_DIR := apps
APPS_MODULES := $(APPS_DIR)/node_modules/.installed
APPS_BUILT := $(APPS_DIR)/dist/.built
APPS_SOURCES := $(shell find $(APPS_DIR)/src -type f) $(APPS_DIR)/build.mjs $(APPS_DIR)/tsconfig.json

apps: $(APPS_BUILT)

$(APPS_MODULES): $(APPS_DIR)/package.json $(APPS_DIR)/package-lock.json
	cd $(APPS_DIR) && npm ci --omit=optional --ignore-scripts --no-audit --no-fund
	touch $@

$(APPS_BUILT): $(APPS_MODULES) $(APPS_SOURCES)
	cd $(APPS_DIR) && npm run build
	touch $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# The suite runs in TEST_WORKERS processes (pytest-xdist), each with its own embedded database
# and servers; a file's tests stay in one process (--dist loadfile: module-scoped servers start
# once). Much of a test's time is waiting (timers, subprocess servers, the browser), so two
# processes on two cores overlap it (`make test TEST_WORKERS=2`: ~33 min here against ~43). One
# process is the default: with two, the machine's load reaches 10-15 and tests that wait on
# timers and browsers fail by timing (two of 4,632 in the last two-process run).
# The sources are compiled first: with PYTHONDONTWRITEBYTECODE set, every `fhir-server serve`
# a test starts would otherwise compile the whole server again.
TEST_WORKERS ?= 0

unit: $(DEV_STAMP) test-deps apps
	$(BIN)/python -m compileall -q fhir_server interceptors subscriptions workflows telehealth tests > /dev/null
	$(BIN)/pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck unit

# tests/clients drives real SMART clients, among them the JS client in Debian's Chromium: the
# browser (apt-get, as root, only when missing) and the npm packages (again only when
# package.json or the lock changed; `npm ci` installs the lock exactly and never rewrites it,
# so a test run leaves the tree clean). Python test packages come with the `dev` extra.
JS_DIR := tests/clients/js
JS_STAMP := $(JS_DIR)/node_modules/.installed
CHROMIUM := /usr/bin/chromium

test-deps: $(CHROMIUM) $(JS_STAMP)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --omit=optional --ignore-scripts --no-audit --no-fund
	touch $@

# Benchmarks print numbers (docs/performance.md records them); HTTP load comes from wrk.
WRK := /usr/bin/wrk

$(WRK):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk

# `make bench` runs every benchmark; `make bench QUICK=1` runs each in its --quick mode where
# it has one (bench/run_all.py says which ran at full length).
bench: $(STAMP) $(WRK)
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick,)

bench-rest: $(STAMP) $(WRK)
	$(BIN)/python bench/rest.py

bench-bundles: $(STAMP)
	$(BIN)/python bench/bundles.py

bench-search bench-workers bench-auth bench-consent bench-subscriptions bench-validation: bench-%: $(STAMP) $(WRK)
	$(BIN)/python bench/$*.py

clean:
	rm -rf $(VENV) build *.egg-info

bench-observability: $(STAMP) $(WRK)
	$(BIN)/python bench/observability.py
