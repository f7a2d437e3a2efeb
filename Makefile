# One command for the demo, one for the tests: each sets up what it needs.
#   make demo   virtualenv + local Cassandra node + schema, then serve examples/async_app
#               (waitress, 8 threads, one event loop per thread: CASSANDRA_ASYNC_LOOPS)
#   make demo-quart   the same service on Quart (examples/quart_app), served by hypercorn
#   make test   virtualenv + local Cassandra node, then the whole test suite
# CASSANDRA_HOSTS=host1,host2 uses that cluster instead of starting a node.

PYTHON_BOOT ?= python3
VENV        := .venv
PYTHON      := $(VENV)/bin/python
INSTALLED   := $(VENV)/.installed
DEMO_PORT   ?= 5000

.PHONY: venv cassandra test demo demo-quart lint clean stop

$(INSTALLED): pyproject.toml
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(INSTALLED)

cassandra: venv
	CASSANDRA_PYTHON=$(PYTHON) scripts/cassandra start

test: venv cassandra
	$(PYTHON) -m pytest

demo: venv cassandra
	$(PYTHON) -m flask --app examples.async_app.wsgi init-db
	@echo "Serving the notes service on http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C to stop)"
	CASSANDRA_ASYNC_LOOPS=per-thread $(VENV)/bin/waitress-serve --host 127.0.0.1 --port $(DEMO_PORT) --threads 8 examples.async_app.wsgi:app

demo-quart: venv cassandra
	$(VENV)/bin/quart --app examples.quart_app.asgi init-db
	@echo "Serving the notes service (Quart) on http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C to stop)"
	$(VENV)/bin/hypercorn --bind 127.0.0.1:$(DEMO_PORT) examples.quart_app.asgi:app

stop:
	scripts/cassandra stop

clean: stop
	rm -rf $(VENV) *.egg-info

# make bench   virtualenv + local Cassandra node, then every benchmark scenario
#              (bench/README.md); results in docs/benchmarks/.
#              make bench BENCH_ARGS=--quick   a smoke run (~1 min, output in the temp dir)
BENCH_ARGS      ?=
BENCH_INSTALLED := $(VENV)/.installed-bench

.PHONY: bench

$(BENCH_INSTALLED): pyproject.toml $(INSTALLED)
	$(PYTHON) -m pip install --quiet -e '.[bench]'
	touch $@

bench: venv cassandra $(BENCH_INSTALLED)
	$(PYTHON) -m bench.run $(BENCH_ARGS)

# The docs site: the docs extra, then Sphinx with every warning an error,
# into docs/_build/html (git-ignored). Needs no Cassandra node.
DOCS_INSTALLED := $(VENV)/.installed-docs

$(DOCS_INSTALLED): pyproject.toml $(INSTALLED)
	$(PYTHON) -m pip install --quiet -e '.[docs]'
	touch $@

.PHONY: docs
docs: $(DOCS_INSTALLED)
	$(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

# ruff on the repo, mypy on the package (CI runs it after the tests).
LINT_INSTALLED := $(VENV)/.installed-lint

$(LINT_INSTALLED): pyproject.toml $(INSTALLED)
	$(PYTHON) -m pip install --quiet -e '.[lint]'
	touch $@

.PHONY: lint
lint: $(LINT_INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check flask_cqlalchemy tests examples
	$(VENV)/bin/mypy flask_cqlalchemy

# make test-drivers   the whole suite once per supported cassandra-driver
#                     release (3.29.3 and 3.30.1 by default), each in its own
#                     virtualenv under .venv-drivers/ (git-ignored), against the
#                     same local node as `make test`. One summary line per
#                     version; fails if any version fails. CI runs `make test`
#                     only. DRIVER_VERSIONS="..." picks other releases;
#                     TEST_ARGS=... is passed to pytest.
TEST_ARGS ?=

.PHONY: test-drivers
test-drivers: venv cassandra
	scripts/test-drivers $(TEST_ARGS)
