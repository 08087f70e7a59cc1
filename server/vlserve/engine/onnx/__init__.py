"""ONNX Runtime sessions for encoder graphs, family-agnostic (runtime.py): providers from
what is installed, thread and optimisation settings, profiles from a GraphSpec. Each family
exports and wraps its own graphs (families/<name>/onnx/)."""
