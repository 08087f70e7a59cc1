# Two entry points (see README): `make serve` and `make test`. Each builds .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this workplace's disk; on a CUDA machine override it, e.g.
#   make test TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test serve bench clean

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e './clients/python[all]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

serve: $(VENV)/.installed
	$(VENV)/bin/vlserve serve

clean:
	rm -rf $(VENV) .pytest_cache
