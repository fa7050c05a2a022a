# Two commands on a fresh machine: `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo synth bench venv clean

venv: $(STAMP)

# Re-install whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m local demo

synth: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) app.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) cdk.out .pytest_cache
