# One command for the demo, one for the tests: each sets up what it needs.
#   make demo   virtualenv + local Cassandra node + schema, then serve examples/async_app
#   make test   virtualenv + local Cassandra node, then the whole test suite
# CASSANDRA_HOSTS=host1,host2 uses that cluster instead of starting a node.

PYTHON_BOOT ?= python3
VENV        := .venv
PYTHON      := $(VENV)/bin/python
INSTALLED   := $(VENV)/.installed
DEMO_PORT   ?= 5000

.PHONY: venv cassandra test demo lint clean stop

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
	$(VENV)/bin/waitress-serve --host 127.0.0.1 --port $(DEMO_PORT) --threads 8 examples.async_app.wsgi:app

stop:
	scripts/cassandra stop

clean: stop
	rm -rf $(VENV) *.egg-info
