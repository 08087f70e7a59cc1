"""ONNX Runtime for BLIP's encoder graphs (vision, text, fusion); the decoder stays on torch.

graphs.py    the graphs as export-ready modules and their interfaces
export.py    torch -> ONNX (dynamic batch and text length), onnx checker, check against torch
encoders.py  the sessions one engine uses, behind BlipEngine's graph methods
command.py   `vlserve export-onnx` for BLIP folders

The sessions themselves (providers, threads, optimisation) are engine/onnx/runtime.py.
onnx / onnxruntime are imported only when a graph is exported or run.
"""
