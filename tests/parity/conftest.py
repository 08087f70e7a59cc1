"""Parity with the reference implementations that need their own environment (open_clip 3.3
needs torchvision, which does not import beside the CPU torch wheel): `make test` runs this
folder again in .venv-ref (torch 2.14.1 + torchvision 0.29.1, open_clip 3.3, transformers
4.55.4); in the main environment it is skipped."""

import pytest

open_clip = pytest.importorskip("open_clip", reason="runs in .venv-ref (make test)")
