# Every target sets itself up: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-ui test test-e2e test-e2e-lowest test-distributed test-slow test-lowest test-wheel browser lint unit bench install clean

# The newest Airflow we test with, and the lowest one pyproject.toml admits (tested without the S3 extra).
# constraints/ pins every dependency as tested (pip freeze of a green run): installs are fast and repeatable.
AIRFLOW_NEWEST ?= 3.3.2
AIRFLOW_LOWEST ?= 3.1.8
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed-stamp
# The distributed deployment's venv: the newest Airflow plus the Celery executor, Redis client and
# PostgreSQL drivers, pinned in constraints/distributed-*.txt (celery 5.7 breaks the celery provider).
DIST_VENV ?= .venv-distributed
DIST_STAMP := $(DIST_VENV)/.installed-stamp
DIST_RUN ?= build/test-distributed

$(STAMP): pyproject.toml constraints/airflow-$(AIRFLOW_NEWEST).txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -c constraints/airflow-$(AIRFLOW_NEWEST).txt
	touch $(STAMP)

$(LOWEST_STAMP): pyproject.toml constraints/airflow-$(AIRFLOW_LOWEST).txt
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet -e . -c constraints/airflow-$(AIRFLOW_LOWEST).txt \
		'apache-airflow==$(AIRFLOW_LOWEST)' pytest pytest-asyncio pytest-timeout 'moto[server]' selenium
	touch $(LOWEST_STAMP)

$(DIST_STAMP): pyproject.toml constraints/airflow-$(AIRFLOW_NEWEST).txt constraints/distributed-$(AIRFLOW_NEWEST).txt
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DIST_VENV)/bin/python -m pip install --quiet -e '.[test]' -c constraints/airflow-$(AIRFLOW_NEWEST).txt \
		-c constraints/distributed-$(AIRFLOW_NEWEST).txt \
		'celery[redis]' apache-airflow-providers-celery asyncpg psycopg2-binary
	touch $(DIST_STAMP)

install: $(STAMP)

## The demo: a real DAG against the bundled emulator, ending in a stored video and its URI.
demo: $(STAMP)
	$(PY) scripts/demo.py

## The gallery in the Airflow UI: airflow standalone on 127.0.0.1:8080 (DEMO_UI_PORT), the emulator, a run of
## example_videoquery_gallery; prints the run's Videos tab and keeps running until Ctrl-C.
DEMO_UI_PORT ?= 8080
demo-ui: $(STAMP)
	$(PY) scripts/demo_ui.py --port $(DEMO_UI_PORT)

## The test command: lint, types, then the suite.
test: lint unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest

## A real deployment: api-server, scheduler, dag-processor and triggerer processes run a deferring DAG;
## headless Chromium fills in the connection form (its screenshots go to artifacts/).
test-e2e: $(STAMP) browser
	VIDEOQUERY_E2E=1 $(PY) -m pytest -m '' tests/e2e

## The gallery in a real browser on the lowest supported Airflow (3.1.8): its UI, tabs and login differ.
test-e2e-lowest: $(LOWEST_STAMP) browser
	VIDEOQUERY_E2E=1 $(LOWEST_VENV)/bin/python -m pytest -m '' tests/e2e/test_gallery.py

## The long tests left out of the default run (e.g. the batch example over 1,000 prompts).
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

## A distributed deployment on 127.0.0.1: PostgreSQL, Redis, CeleryExecutor with two workers, two
## triggerers; mapped waits, a triggerer and a worker killed mid-run. Installs Redis (apt) and
## PostgreSQL's server when missing; logs and report.txt stay in $(DIST_RUN).
test-distributed: $(DIST_STAMP)
	@command -v redis-server >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }
	VIDEOQUERY_DISTRIBUTED=1 VIDEOQUERY_DISTRIBUTED_DIR=$(DIST_RUN) \
		$(DIST_VENV)/bin/python -m pytest -m '' -s tests/e2e/test_distributed.py

## Debian's Chromium and chromedriver for the browser test, when missing (the test skips, saying why,
## where they cannot be installed).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
		echo "Chromium could not be installed: the browser test will skip."

## The release: build the sdist and wheel, twine check, install the wheel in a clean venv, run the demo.
test-wheel: $(STAMP)
	VIDEOQUERY_WHEEL=1 $(PY) -m pytest -m '' -s tests/release

## The same suite on the lowest supported Airflow (S3 tests skip: no amazon provider there).
test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(DIST_VENV) .mypy_cache .ruff_cache build *.egg-info
