"""BLIP as the registry sees it: which folders it claims, its model.toml table, loading."""

from __future__ import annotations

import json
from pathlib import Path

from ...engine.family import EngineOptions, Family
from ...engine.weights import find_weights, read_state_dict
from ...errors import CheckpointError
from .engine import BlipEngine, BlipOptions


class BlipFamily(Family):
    name = "blip"
    table = BlipOptions
    legacy_keys = ("cross_attention", "fusion_first_token", "prompt")  # top-level in model.toml before [blip]

    def claim(self, folder: Path) -> str | None:
        config = folder / "config.json"
        if config.is_file():
            try:
                cfg = json.loads(config.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                return f"config.json is not valid JSON ({exc})"
            if not isinstance(cfg, dict):
                return "config.json is not a JSON object"
            kind = cfg.get("model_type")
            if kind is not None and kind != "blip":
                return f"config.json says model_type '{kind}': not a BLIP checkpoint"
            foreign = [a for a in cfg.get("architectures") or [] if not str(a).startswith("Blip")]
            if foreign:
                return f"config.json lists architectures {', '.join(map(str, foreign))}: not BLIP classes"
            if "vision_config" not in cfg and "text_config" not in cfg:
                return "config.json has no vision_config / text_config: not a BLIP checkpoint"
            return None
        pth = sorted(folder.glob("*.pth"))
        if not pth:
            return "no config.json and no original BLIP .pth checkpoint"
        try:
            keys = read_state_dict(find_weights(folder)).keys()
        except CheckpointError as exc:
            return str(exc)
        if not any(k.startswith("visual_encoder.") for k in keys):
            return f"{pth[0].name} holds no visual_encoder.* weights: not an original BLIP checkpoint"
        return None

    def load(self, folder: Path, options: EngineOptions, family_options: BlipOptions | None = None) -> BlipEngine:
        return BlipEngine(folder, options, family_options or BlipOptions())

    def export_onnx(self, folder: Path, graphs: list[str] | None, out: Path | None, dtype: str) -> dict:
        from .onnx.command import export_onnx

        return export_onnx(folder, graphs, out, dtype)

    def merge(self, out: Path, folders: list[Path], prefer_first: bool = False) -> dict:
        from .merge import merge

        return merge(out, folders, prefer_first=prefer_first)


FAMILY = BlipFamily()
