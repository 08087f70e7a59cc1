"""BEiT-3 as the registry sees it: which folders it claims, its model.toml table, loading."""

from __future__ import annotations

from pathlib import Path

from ...engine.family import EngineOptions, Family
from ...errors import CheckpointError
from .engine import Beit3Engine, Beit3Options
from .loader import is_beit3, read_weights


class Beit3Family(Family):
    name = "beit3"
    table = Beit3Options

    def claim(self, folder: Path) -> str | None:
        try:
            state = read_weights(folder)
        except CheckpointError as exc:
            return str(exc)
        if not is_beit3(state):
            return "the checkpoint holds no beit3.encoder.layers.* weights: not a BEiT-3 checkpoint"
        return None

    def load(self, folder: Path, options: EngineOptions, family_options: Beit3Options | None = None) -> Beit3Engine:
        return Beit3Engine(folder, options, family_options or Beit3Options())


FAMILY = Beit3Family()
