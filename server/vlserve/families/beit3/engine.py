"""Beit3Engine: a loaded BEiT-3 checkpoint behind the family contract (engine/family.py).

What a checkpoint serves follows from its heads: retrieval (vision_head + language_head:
embed, score and rank by ITC), VQA (pooler + classifier: vqa in classify mode over its
answer list) and captioning (mlm_head: caption). BEiT-3 has no match head, so no ITM and
no CapFilt filter.

Image states are the image tokens with their positions (B, N, D): cheap to make, and the
input of all three modes, so each graph runs only when a task needs it — the vision mode
in `image_embeddings` and in the caption decoder's prefix (decoder.py), the fusion mode in
`classify`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...engine.family import (AnswerClassifier, Captioner, EngineOptions, FamilyEngine, Source, derive_capabilities,
                              check_int8, resolve_dtype)
from ...engine.images import CropProcessor
from ...errors import CheckpointError, InvalidInputError
from ...models.attention import make_backend
from .decoder import Beit3CaptionGraph
from .loader import SPM, load_beit3
from .tokenizer import Beit3Tokenizer

MEAN = STD = (0.5, 0.5, 0.5)  # unilm's IMAGENET_INCEPTION_MEAN / _STD


class Beit3Options(BaseModel):
    """model.toml's [beit3] table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    heads: int | None = Field(None, ge=1)  # default: width / 64 (unilm's base and large)
    layernorm_eps: float = Field(1e-5, gt=0)
    max_text_tokens: int = Field(64, ge=3)  # unilm's num_max_bpe_tokens; <s> and </s> included
    prompt: str = ""  # default caption prompt (unilm starts from <s> alone)


class Beit3Engine(FamilyEngine):
    family = "beit3"

    def __init__(self, folder: str | Path, options: EngineOptions = EngineOptions(),
                 beit3: Beit3Options = Beit3Options()):
        self.folder = Path(folder)
        self.options = options
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype)
        loaded = load_beit3(self.folder, heads=beit3.heads, eps=beit3.layernorm_eps, device=self.device,
                            dtype=self.dtype)
        self.model, self.answers = loaded.model, loaded.answers
        cfg = self.model.config
        self.backend = make_backend(options.attention, self.device)
        self.model.set_attention_backend(self.backend)
        check_int8(options, self.device)
        if options.int8_graphs:
            self.model.quantize_int8()  # one backbone runs every graph: they all go int8 with it
            self.int8_graphs = self.graphs
        if not (self.folder / SPM).is_file():
            raise CheckpointError(f"{self.folder}: no {SPM} (the XLM-R sentencepiece model unilm ships)")
        max_tokens = min(beit3.max_text_tokens, cfg.max_text_tokens)
        self.tokenizer = Beit3Tokenizer(self.folder / SPM, max_tokens)
        if self.tokenizer.vocab_size > cfg.vocab_size:
            raise CheckpointError(f"{SPM} has {self.tokenizer.vocab_size} ids with <mask>; the checkpoint's "
                                  f"embedding has {cfg.vocab_size}")
        self.processor = CropProcessor(size=cfg.image_size, mean=MEAN, std=STD, resize_mode="squash")
        self.default_prompt = beit3.prompt
        if cfg.caption:
            self.caption_decoder = Beit3CaptionGraph(self.model, self.tokenizer.eos_id, self.tokenizer.mask_id)

    def supports(self, capability: type) -> bool:
        cfg = self.model.config
        return (capability is Captioner and cfg.caption) or (capability is AnswerClassifier and bool(cfg.answers))

    @property
    def graphs(self) -> tuple[str, ...]:
        return ("vision", "text", "fusion") + (("decoder",) if self.model.config.caption else ())

    @property
    def capabilities(self):
        cfg = self.model.config
        return derive_capabilities(self, embedding_dim=cfg.width if cfg.retrieval else None,
                                   max_text_tokens=self.tokenizer.max_tokens, image_size=cfg.image_size,
                                   graphs=self.graphs, answers=self.answers)

    def describe(self) -> dict:
        cfg = self.model.config
        heads = [h for h, on in (("retrieval", cfg.retrieval), ("vqa", bool(cfg.answers)),
                                 ("captioning", cfg.caption)) if on]
        return {"attention": self.backend.name, "heads": heads, "answers": len(self.answers),
                "layers": cfg.layers, "width": cfg.width, "default_prompt": self.default_prompt}

    # -- inputs ---------------------------------------------------------------------------

    def check_texts(self, texts: list[str], param: str = "texts") -> list[int]:
        return [len(ids) for ids in self.tokenizer.validate(list(texts), param)]

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _text(self, texts: list[str], param: str = "texts"):
        ids, pad = self.tokenizer.encode_batch(list(texts), param)
        return ids.to(self.device), pad.to(self.device)

    # -- graphs ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image tokens with positions (B, N, D); the modes run later, as tasks need them."""
        return self.model.embed_image(pixels.to(self.device, self.dtype))

    @torch.inference_mode()
    def image_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        self._need_retrieval()
        return self.model.image_embedding(self.model.vision(states, first_only=True))

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        self._need_retrieval()
        ids, pad = self._text(texts)
        return self.model.text_embedding(self.model.text(ids, pad, first_only=True))

    def _need_retrieval(self) -> None:
        if not self.model.config.retrieval:
            raise InvalidInputError("this BEiT-3 checkpoint has no retrieval heads", param="model")

    @torch.inference_mode()
    def classify(self, states: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """(B, answers) probabilities: the sigmoid of each answer's logit, as unilm trains the
        head (binary cross-entropy against VQA's soft scores), so they need not sum to one."""
        ids, pad = self._text(questions, "questions")
        return torch.sigmoid(self.model.answer_logits(self.model.fusion(states, ids, pad, first_only=True)))

    # -- captioning -----------------------------------------------------------------------

    def caption_prompt(self, prompt: str | None) -> list[int]:
        return self.tokenizer.prompt(self.default_prompt if prompt is None else prompt)

    def caption_sources(self, states: torch.Tensor) -> list[Source]:
        return [Source(t, t.shape[0]) for t in states]
