"""CoCa's configuration, as open_clip writes it (`open_clip_config.json` `model_cfg`), with
open_clip 3.3's defaults for what a config leaves out. Served: the towers open_clip builds
itself (its own ViT and text transformer): `coca_ViT-B-32`, `coca_ViT-L-14`, `coca_base`.
Not served: `coca_roberta-ViT-B-32` (a HuggingFace RoBERTa text tower) and timm or
ModifiedResNet vision towers; configs asking for open_clip's "custom" attention blocks
(qk_norm, scaled cosine attention, ...) are refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LN_EPS = 1e-5  # open_clip's LayerNorm: torch's default
CUSTOM_BLOCK_KEYS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
UNSERVED_KEYS = ("timm_model_name", "hf_model_name", "hf_tokenizer_name")


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    attentional_pool: bool = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    no_ln_pre: bool = False
    pool_type: str = "tok"

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    embed_cls: bool = False
    pad_id: int = 0
    pool_type: str = "argmax"
    proj_bias: bool = False


@dataclass(frozen=True)
class MultimodalConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    ls_init_value: float | None = None


@dataclass(frozen=True)
class CocaConfig:
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)
    quick_gelu: bool = False

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> "CocaConfig":
        """From a `model_cfg` dict; raises ValueError naming what vlserve does not serve."""
        if "multimodal_cfg" not in cfg:
            raise ValueError("model_cfg has no multimodal_cfg: not a CoCa model")
        towers = {"vision_cfg": cfg.get("vision_cfg") or {}, "text_cfg": cfg.get("text_cfg") or {},
                  "multimodal_cfg": cfg.get("multimodal_cfg") or {}}
        for name, tower in towers.items():
            for key in UNSERVED_KEYS + CUSTOM_BLOCK_KEYS:
                if tower.get(key):
                    raise ValueError(f"{name}.{key} is set: that tower is not one vlserve serves")
        vision = towers["vision_cfg"]
        if isinstance(vision.get("layers"), (list, tuple)):
            raise ValueError("vision_cfg.layers is a list: a ModifiedResNet tower, not served")
        if isinstance(vision.get("attentional_pool"), str):
            raise ValueError(f"vision_cfg.attentional_pool '{vision['attentional_pool']}' is not served")
        if vision.get("pos_embed_type", "learnable") != "learnable":
            raise ValueError("only learnable vision position embeddings are served")
        config = cls(embed_dim=int(cfg["embed_dim"]), vision=_pick(VisionConfig, vision),
                     text=_pick(TextConfig, towers["text_cfg"]), multimodal=_pick(MultimodalConfig,
                                                                                  towers["multimodal_cfg"]),
                     quick_gelu=bool(cfg.get("quick_gelu", False)))
        config.check()
        return config

    def to_open_clip(self) -> dict[str, Any]:
        """The `model_cfg` open_clip builds this architecture from."""
        vision = dataclasses.asdict(self.vision)
        return {"embed_dim": self.embed_dim, "quick_gelu": self.quick_gelu, "custom_text": True,
                "vision_cfg": vision | {"output_tokens": True},
                "text_cfg": dataclasses.asdict(self.text) | {"output_tokens": True},
                "multimodal_cfg": dataclasses.asdict(self.multimodal)}

    def check(self) -> None:
        """The widths CoCa's blocks need to agree (open_clip would fail at the first forward)."""
        cross = self.embed_dim if self.vision.attentional_pool else self.vision.width
        if cross != self.multimodal.width:
            raise ValueError(f"the decoder reads image tokens of width {cross} but is {self.multimodal.width} wide")
        if self.text.width != self.multimodal.width:
            raise ValueError("the text tower and the multimodal decoder must have one width")
        if not self.text.embed_cls:
            raise ValueError("text_cfg.embed_cls is false: CoCa's text embedding is its appended cls token")


def _pick(kind, values: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(kind)}
    kwargs = {k: v for k, v in values.items() if k in known and v is not None}
    for key in ("image_size", "patch_size"):
        if isinstance(kwargs.get(key), (list, tuple)):
            if len(set(kwargs[key])) != 1:
                raise ValueError(f"non-square {key} {kwargs[key]} is not served")
            kwargs[key] = kwargs[key][0]
    return kind(**kwargs)


# open_clip's named CoCa architectures vlserve serves, for a bare checkpoint whose
# model.toml names one (their model_configs/*.json, the facts that differ from the defaults)
ARCHITECTURES = {
    "coca_ViT-B-32": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32, "attentional_pool": True,
                       "attn_pooler_heads": 8},
        "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12,
                     "embed_cls": True},
        "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
    "coca_ViT-L-14": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14, "attentional_pool": True,
                       "attn_pooler_heads": 8},
        "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12,
                     "embed_cls": True},
        "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
    },
    "coca_base": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 288, "layers": 12, "width": 768, "patch_size": 18},
        "text_cfg": {"context_length": 76, "vocab_size": 64000, "layers": 12, "heads": 12, "width": 768,
                     "embed_cls": True},
        "multimodal_cfg": {"width": 768, "context_length": 76, "vocab_size": 64000, "layers": 12, "heads": 12},
    },
}
