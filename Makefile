# All set-up happens here: a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/asp-demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Every benchmark figure in the README (hours on 2 cores; needs ASP_DATA_DIR with MNIST/Fashion-MNIST).
bench: $(STAMP)
	bash benchmarks/reproduce.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
