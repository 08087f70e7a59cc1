"""BEiT-3's configuration, read from the checkpoint itself (torchscale 0.3's `EncoderConfig`
as unilm's `_get_base_config` / `_get_large_config` fill it), with model.toml's [beit3]
table for the one size the weights cannot tell: the number of attention heads.

unilm's fine-tuned checkpoints differ by task (retrieval at 384, VQA at 480, captioning at
480; base or large) and are all read the same way: widths from the embeddings, depth from
the layer keys, image and patch size from the vision position table and patch projection,
whether the encoder ends in a LayerNorm (unilm's VQA and classification models drop it:
`normalize_output = False`) from its keys, and which task heads exist from theirs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

POSITION_OFFSET = 2  # fairseq's: position tables start at row 2
HEAD_DIM = 64  # unilm's base (768 / 12) and large (1024 / 16)
LN_EPS = 1e-5  # torchscale's EncoderConfig layernorm_eps and torch's LayerNorm default
PREFIX = "beit3."

RETRIEVAL_KEYS = ("vision_head.weight", "language_head.weight")
VQA_KEYS = ("pooler.dense.weight", "head.3.weight")
CAPTION_KEYS = ("mlm_head.weight",)


@dataclass(frozen=True)
class Beit3Config:
    width: int = 768
    heads: int = 12
    layers: int = 12
    ffn: int = 3072
    vocab_size: int = 64010
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    text_positions: int = 1024  # rows of the text position table (max_source_positions)
    normalize_output: bool = True  # the encoder's final (multiway) LayerNorm
    subln: bool = True  # inner_attn_ln and ffn_layernorm (Magneto's sub-LN layout)
    eps: float = LN_EPS
    retrieval: bool = False  # vision_head / language_head
    answers: int = 0  # VQA classifier outputs (0: no VQA head)
    caption: bool = False  # mlm_head

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        """Patches plus the class token."""
        return self.grid * self.grid + 1

    @property
    def max_text_tokens(self) -> int:
        return self.text_positions - POSITION_OFFSET

    @classmethod
    def from_state_dict(cls, state: dict, *, heads: int | None = None, eps: float = LN_EPS) -> "Beit3Config":
        """The configuration the weights imply (raise ValueError naming what is missing)."""
        def need(key: str):
            if PREFIX + key not in state:
                raise ValueError(f"no {PREFIX}{key}: not a BEiT-3 checkpoint")
            return state[PREFIX + key]

        vocab, width = need("text_embed.weight").shape
        proj = need("vision_embed.proj.weight")  # (D, C, p, p)
        vision_rows = need("encoder.embed_positions.A.weight").shape[0]
        text_rows = need("encoder.embed_positions.B.weight").shape[0]
        fc1 = need("encoder.layers.0.ffn.A.fc1.weight")
        layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"beit3\.encoder\.layers\.(\d+)\.", k))}
        layers = max(layer_ids) + 1
        if layer_ids != set(range(layers)):
            raise ValueError(f"encoder layers {sorted(set(range(layers)) - layer_ids)} are missing")
        patches = vision_rows - 1 - POSITION_OFFSET
        grid = math.isqrt(patches) if patches > 0 else 0
        if grid * grid != patches:
            raise ValueError(f"the vision position table has {vision_rows} rows: not 2 + 1 + a square grid")
        heads = heads or width // HEAD_DIM
        if heads <= 0 or width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads of equal size (the weights cannot "
                             "tell the head count: set [beit3] heads in model.toml)")
        answers = state["head.3.weight"].shape[0] if all(k in state for k in VQA_KEYS) else 0
        return cls(width=width, heads=heads, layers=layers, ffn=fc1.shape[0], vocab_size=vocab,
                   image_size=grid * proj.shape[-1], patch_size=proj.shape[-1], in_chans=proj.shape[1],
                   text_positions=text_rows,
                   normalize_output=PREFIX + "encoder.layer_norm.A.weight" in state,
                   subln=PREFIX + "encoder.layers.0.ffn.A.ffn_layernorm.weight" in state,
                   eps=eps, retrieval=all(k in state for k in RETRIEVAL_KEYS), answers=answers,
                   caption=all(k in state for k in CAPTION_KEYS))

    def to_encoder_config(self) -> dict:
        """The torchscale EncoderConfig keyword arguments that build this architecture (what
        unilm's `_get_base_config` passes, sized to these weights)."""
        return dict(img_size=self.image_size, patch_size=self.patch_size, in_chans=self.in_chans,
                    vocab_size=self.vocab_size, multiway=True, layernorm_embedding=False,
                    normalize_output=self.normalize_output, no_output_layer=True, drop_path_rate=0.0,
                    encoder_embed_dim=self.width, encoder_attention_heads=self.heads,
                    encoder_ffn_embed_dim=self.ffn, encoder_layers=self.layers,
                    max_source_positions=self.text_positions, subln=self.subln, layernorm_eps=self.eps)
