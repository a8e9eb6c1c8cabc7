# Two entry points on a fresh machine:
#   make demo   create .venv, install, run the toy-world demo
#   make test   create .venv, install (with test extras), run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): requirements.txt requirements-test.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Base-to-novel MaPLe on the toy world (tools/demo.py): train on the 32 base classes
# (16 shots), test on the 32 new ones, print Base / New / HM. Data is generated on first use.
demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) output
