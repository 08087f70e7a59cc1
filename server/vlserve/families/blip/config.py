"""BLIP configuration: sizes, head counts and eps, read from a checkpoint's config.json.

Missing keys fall back to the defaults of transformers' BLIP config classes, so a
config.json means the same thing here as it does to transformers (note that those
defaults give the text model 8 heads; the public checkpoints set 12 explicitly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 384
    patch_size: int = 16
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 30524
    hidden_size: int = 768
    encoder_hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 512
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    bos_token_id: int = 30522
    sep_token_id: int = 102
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class BlipConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # width of the ITC space (vision_proj / text_proj outputs)
    image_text_hidden_size: int = 256

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> "BlipConfig":
        vision = _pick(VisionConfig, cfg.get("vision_config") or {})
        text_dict = dict(cfg.get("text_config") or {})
        # transformers' BlipConfig forces the cross-attention width to the vision width
        text_dict["encoder_hidden_size"] = vision.hidden_size
        text = _pick(TextConfig, text_dict)
        return cls(vision=vision, text=text,
                   image_text_hidden_size=int(cfg.get("image_text_hidden_size", 256)))

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers' BLIP classes load to the same architecture."""
        text = dataclasses.asdict(self.text)
        text["eos_token_id"] = self.text.sep_token_id
        return {
            "architectures": ["BlipForConditionalGeneration"],
            "model_type": "blip",
            "image_text_hidden_size": self.image_text_hidden_size,
            "projection_dim": self.image_text_hidden_size,
            "text_config": {"model_type": "blip_text_model", **text},
            "vision_config": {"model_type": "blip_vision_model", **dataclasses.asdict(self.vision)},
        }


def _pick(kind, values: dict[str, Any]):
    """Build a config dataclass from the keys it knows; the rest of config.json is ignored."""
    known = {f.name: f.type for f in dataclasses.fields(kind)}
    kwargs = {}
    for name in known:
        if name in values and values[name] is not None:
            value = values[name]
            if isinstance(value, (list, tuple)):  # image_size / patch_size may be given as pairs
                if len(set(value)) != 1:
                    raise ValueError(f"non-square {name} {value} is not supported")
                value = value[0]
            kwargs[name] = value
    return kind(**kwargs)


def preset(name: str) -> BlipConfig:
    """Architectures of the public checkpoints (weights not included)."""
    text = TextConfig(num_attention_heads=12)
    if name == "base":
        return BlipConfig(vision=VisionConfig(), text=text)
    if name == "large":
        vision = VisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16)
        return BlipConfig(vision=vision, text=dataclasses.replace(text, encoder_hidden_size=1024))
    raise ValueError(f"unknown preset {name!r}; choose 'base' or 'large'")
