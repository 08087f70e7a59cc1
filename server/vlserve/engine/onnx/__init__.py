"""ONNX Runtime for BLIP's encoder graphs (vision, text, fusion); the decoder stays on torch.

export.py    torch -> ONNX (dynamic batch and text length), onnx checker, check against torch
runtime.py   sessions: providers from what is installed, thread and optimisation settings
encoders.py  the sessions one engine uses, behind BlipEngine's graph methods
command.py   `vlserve export-onnx`

onnx / onnxruntime are imported only when a graph is exported or run.
"""
