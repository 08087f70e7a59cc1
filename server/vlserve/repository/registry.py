"""The family registry: a family's name -> where its Family lives ("module:attribute"),
imported on first use, as vLLM's model registry does. The only place in vlserve that
names a family's module.

A folder whose model.toml names no family is offered to each family in the order below;
the first that claims it serves it, and when none does, every family's reason is kept
for /v1/models. Claims are decided by what the files say (config.json's model_type and
architectures, checkpoint keys), never by file or folder names.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..engine.family import Family
from ..errors import CheckpointError

FAMILIES = {
    "blip": "vlserve.families.blip.family:FAMILY",
    "coca": "vlserve.families.coca.family:FAMILY",
    "beit3": "vlserve.families.beit3.family:FAMILY",
}

_loaded: dict[str, Family] = {}


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise CheckpointError(f"unknown family '{name}'; vlserve serves: {', '.join(FAMILIES)}")
    if name not in _loaded:
        module, attr = FAMILIES[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), attr)
    return _loaded[name]


def sniff(folder: Path) -> tuple[str | None, str]:
    """(the family that claims the folder, "") or (None, every family's reason)."""
    reasons = []
    for name in FAMILIES:
        why = family(name).claim(folder)
        if why is None:
            return name, ""
        reasons.append(f"{name}: {why}")
    return None, "no family claims this folder (" + "; ".join(reasons) + ")"
