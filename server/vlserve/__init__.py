"""vlserve: an inference server for BLIP-family vision-language models.

The heavy parts (torch) load on first use, so `import vlserve.settings` stays light.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "Pipeline", "__version__"]


def __getattr__(name):
    if name in ("load_model", "Pipeline"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'vlserve' has no attribute {name!r}")
