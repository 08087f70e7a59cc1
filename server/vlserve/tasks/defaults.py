"""Each task's generation defaults, in one place (a model.toml may override them)."""

from __future__ import annotations

from ..engine.generation.params import GenerationParams

CAPTION = GenerationParams()  # transformers' GenerationConfig defaults: greedy, 20 tokens
VQA = GenerationParams(max_new_tokens=10)  # answers are a few words
# BLIP samples its synthetic captions with nucleus sampling (top-p 0.9, no top-k)
CAPFILT_SAMPLING = {"do_sample": True, "top_p": 0.9, "top_k": 0, "num_beams": 1}
