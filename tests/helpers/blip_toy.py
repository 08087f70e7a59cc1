"""The shipped blip-toy, as its model, ONNX and HTTP tests name it (tests/helpers/toys.py)."""

from tests.helpers.toys import REPO, held_out_world, needs  # noqa: F401

MODEL = REPO / "blip-toy"
needs_weights = needs("blip-toy")
