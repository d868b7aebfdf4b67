# Loomwork: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP_INSTALL = $(BIN)/pip install --quiet --disable-pip-version-check
QUICK  ?=
# make demo PORT=5001: the demo's port (default 5000). Not HOST too: some shells export
# HOST as the machine's name, which would quietly change where the demo listens.
PORT   ?=

.PHONY: demo test lint bench clean messages

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(PIP_INSTALL) -e . --config-settings editable_mode=strict
	touch $@

$(VENV)/.installed-dev: $(BIN)/activate setup.cfg pyproject.toml
	$(PIP_INSTALL) -e '.[dev]' --config-settings editable_mode=strict
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/loomwork demo $(if $(PORT),--port $(PORT),)

test: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . --config-settings editable_mode=strict
	PYTHONSAFEPATH=1 $(BIN)/lint-imports
	PYTHONSAFEPATH=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check platform metadata runtime designer plugins tests bench
	PYTHONSAFEPATH=1 $(BIN)/lint-imports

bench: $(VENV)/.installed-dev
	PYTHONSAFEPATH=1 $(BIN)/python bench/run_all.py $(if $(QUICK),--quick,)

# Extract the UI's strings and merge them into every catalog (then translate the new
# empty entries; tests/test_web_i18n.py fails while one is missing).
messages: $(VENV)/.installed-dev
	$(BIN)/pybabel extract -F babel.cfg -k _N --no-location --sort-output --project Loomwork \
		--copyright-holder Loomwork -o platform/loomwork/web/translations/messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching -i platform/loomwork/web/translations/messages.pot \
		-d platform/loomwork/web/translations

clean:
	rm -rf $(VENV) build *.egg-info instance test-artefacts
