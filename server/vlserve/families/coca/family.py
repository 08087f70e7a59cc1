"""CoCa as the registry sees it: which folders it claims, its model.toml table, loading."""

from __future__ import annotations

import json
from pathlib import Path

from ...engine.family import EngineOptions, Family
from .engine import CocaEngine, CocaOptions
from .loader import CONFIG


class CocaFamily(Family):
    name = "coca"
    table = CocaOptions

    def claim(self, folder: Path) -> str | None:
        path = folder / CONFIG
        if not path.is_file():
            return (f"no {CONFIG} (a bare open_clip checkpoint needs family = \"coca\" and [coca] architecture "
                    "in model.toml)")
        try:
            cfg = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            return f"{CONFIG} is not valid JSON ({exc})"
        model_cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else None
        if not isinstance(model_cfg, dict) or "multimodal_cfg" not in model_cfg:
            return f"{CONFIG} describes an open_clip model without a multimodal decoder: not CoCa"
        return None

    def load(self, folder: Path, options: EngineOptions, family_options: CocaOptions | None = None) -> CocaEngine:
        return CocaEngine(folder, options, family_options or CocaOptions())


FAMILY = CocaFamily()
