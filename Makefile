# Two entry points on a fresh machine:
#   make demo   create .venv, install, run the toy-world demo
#   make test   create .venv, install (with test extras), run the whole test suite
# The package is installed as a wheel (not editable: setuptools' editable mode warns about the
# mapped folders); `make venv` reinstalls it when a source file changes. Tools and tests run from
# the checkout use the checkout's files either way. The install's full build output goes to
# $(VENV)/install.log (printed if it fails).
# Offline or reusing another environment's packages (as tests/packaging does):
#   make venv VENV=/tmp/v VENV_ARGS=--without-pip EXTRA_SITE=/path/to/site-packages \
#        PIP_ARGS="--no-index --no-build-isolation"
PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
PIP_ARGS ?=
EXTRA_SITE ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := $(shell find dassl_lite trainers datasets configs tools -name '*.py' -o -name '*.yaml')

.PHONY: demo test venv clean

$(STAMP): requirements.txt requirements-test.txt setup.py pyproject.toml $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	if [ -n "$(EXTRA_SITE)" ]; then echo "$(EXTRA_SITE)" > \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/extra_site.pth"; fi
	$(PY) -m pip install --quiet $(PIP_ARGS) --upgrade pip
	$(PY) -m pip install --quiet $(PIP_ARGS) -r requirements-test.txt
	PYTHONDONTWRITEBYTECODE= $(PY) -m pip install --verbose $(PIP_ARGS) --no-deps --force-reinstall . \
		> $(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
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
