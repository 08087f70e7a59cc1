# Two entry points (see README): `make serve` and `make test`. Each builds .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this workplace's disk; on a CUDA machine override it, e.g.
#   make test TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
# The reference environment for the parity tests that need open_clip (tests/parity): open_clip
# needs torchvision, which does not import beside the CPU torch 2.13 wheel; torch 2.14.1 and
# torchvision 0.29.1 lie on this workplace's disk. transformers 4.55 still has what
# open_clip's generate imports (BeamSearchScorer).
REF_VENV ?= .venv-ref
REF_PY := $(REF_VENV)/bin/python
REF_SPEC ?= torch==2.14.1 torchvision==0.29.1
# No wheel cache: it would keep a second copy of every download, and the disk is shared (CI once
# ran out of space while installing the reference environment).
export PIP_NO_CACHE_DIR := 1

.PHONY: install test serve bench clean

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e './clients/python[all]'
	touch $@

$(REF_VENV)/.installed: pyproject.toml
	python3 -m venv $(REF_VENV)
	$(REF_PY) -m pip install -q $(REF_SPEC)
	$(REF_PY) -m pip install -q "open_clip_torch==3.3.0" "transformers==4.55.4" "pytest>=8"
	# unilm's BEiT-3 heads and torchscale 0.3: --no-deps (their pins are old), then what their imports need
	$(REF_PY) -m pip install -q --no-deps "torchscale==0.3.0" "beit3-gml==0.1.3"
	$(REF_PY) -m pip install -q "fairscale==0.4.13" "timm>=1,<2" "sentencepiece>=0.2"
	$(REF_PY) -m pip install -q -e .
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed $(REF_VENV)/.installed
	$(PY) -m pytest -q
	$(REF_PY) -m pytest -q tests/parity

serve: $(VENV)/.installed
	$(VENV)/bin/vlserve serve

clean:
	rm -rf $(VENV) $(REF_VENV) .pytest_cache
