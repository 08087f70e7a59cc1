"""CocaEngine: a loaded CoCa checkpoint behind the family contract (engine/family.py).

One vision pass gives both the contrastive embedding and the tokens the caption decoder
reads: image states are the tuple (latent (B, E), decoder tokens (B, N, D)). CoCa has no
match head (no ITM) and no VQA: it captions, embeds, scores and ranks by ITC, and captions
for CapFilt beside another model's filter.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from ...engine.family import (Captioner, EngineOptions, FamilyEngine, Source, check_int8, derive_capabilities,
                              resolve_dtype)
from ...engine.images import CLIP_MEAN, CLIP_STD, CropProcessor
from ...errors import InvalidInputError
from ...models.attention import make_backend
from .decoder import CocaDecoderGraph
from .loader import load_coca
from .tokenizer import ClipTokenizer


class CocaOptions(BaseModel):
    """model.toml's [coca] table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    architecture: str | None = None  # for a bare checkpoint without open_clip_config.json: config.ARCHITECTURES
    prompt: str | None = None  # default caption prompt (open_clip's generate starts from <start_of_text> alone)


def processor_for(preprocess: dict, image_size: int) -> CropProcessor:
    """open_clip's eval transform from a checkpoint's preprocess_cfg (its defaults otherwise)."""
    size = preprocess.get("size", image_size)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square preprocess size {size} is not served")
        size = size[0]
    return CropProcessor(size=int(size), mean=tuple(preprocess.get("mean", CLIP_MEAN)),
                         std=tuple(preprocess.get("std", CLIP_STD)),
                         resize_mode=preprocess.get("resize_mode", "shortest"),
                         interpolation=preprocess.get("interpolation", "bicubic"))


class CocaEngine(FamilyEngine):
    family = "coca"

    def __init__(self, folder: str | Path, options: EngineOptions = EngineOptions(),
                 coca: CocaOptions = CocaOptions()):
        self.folder = Path(folder)
        self.options = options
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype)
        loaded = load_coca(self.folder, architecture=coca.architecture, device=self.device, dtype=self.dtype)
        self.model = loaded.model
        self.backend = make_backend(options.attention, self.device)
        self.model.set_attention_backend(self.backend)
        cfg = self.model.config
        self.tokenizer = ClipTokenizer(cfg.text.context_length, cfg.text.pad_id)
        try:
            self.processor = processor_for(loaded.preprocess, cfg.vision.image_size)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.default_prompt = coca.prompt or ""
        self.caption_decoder = CocaDecoderGraph(self.model, self.tokenizer.eot_id)
        check_int8(options, self.device)
        self.int8_graphs = self.model.quantize_int8(options.int8_graphs)

    def supports(self, capability: type) -> bool:
        return capability is Captioner

    @property
    def capabilities(self):
        cfg = self.model.config
        return derive_capabilities(self, embedding_dim=cfg.embed_dim, max_text_tokens=cfg.text.context_length,
                                   image_size=self.processor.size, graphs=("vision", "text", "decoder"))

    def describe(self) -> dict:
        v = self.model.config.vision
        return {"attention": self.backend.name, "attentional_pool": v.attentional_pool,
                "preprocess": {"resize_mode": self.processor.resize_mode,
                               "interpolation": self.processor.interpolation},
                "default_prompt": self.default_prompt}

    # -- inputs ---------------------------------------------------------------------------

    def check_texts(self, texts: list[str], param: str = "texts") -> list[int]:
        return self.tokenizer.validate(list(texts), param)

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # -- graphs ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`vision` with both poolers: (latent (B, E), decoder tokens (B, N, D))."""
        return self.model.visual(pixels.to(self.device, self.dtype))

    @torch.inference_mode()
    def image_embeddings(self, states) -> torch.Tensor:
        return F.normalize(states[0].float(), dim=-1)

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer.encode_batch(texts).to(self.device)
        return F.normalize(self.model.text(ids).float(), dim=-1)

    # -- captioning -----------------------------------------------------------------------

    def caption_prompt(self, prompt: str | None) -> list[int]:
        return self.tokenizer.encode_prompt(self.default_prompt if prompt is None else prompt)

    def caption_sources(self, states) -> list[Source]:
        return [Source(t, t.shape[0]) for t in states[1]]
