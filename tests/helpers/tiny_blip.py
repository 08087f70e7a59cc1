"""Tiny random BLIP checkpoints in transformers' layout, built in the test (no downloads).

Parameters are re-randomised after transformers' init, whose near-zero embeddings and
identity LayerNorms would hide bugs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vlserve.families.blip.tokenizer import wordpiece_tokenizer

WORDS = ("a picture of the cat dog red blue green small large circle square triangle left above what "
         "color is shape how many there yes no one two size on in with and photo ##s ##ing").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]", "[ENC]"]
SEP_ID, DEC_ID = VOCAB.index("[SEP]"), VOCAB.index("[DEC]")


@dataclass(frozen=True)
class TinySpec:
    name: str
    vision_hidden: int
    vision_heads: int
    vision_layers: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_heads: int
    text_layers: int
    intermediate: int = 40
    act: str = "gelu"


SPECS = [
    TinySpec("pow2", 32, 4, 2, 32, 8, 32, 4, 2),
    # head dim 12 / 6 (not powers of two), image 40 (not a multiple of 64), text heads != vision heads
    TinySpec("odd", 36, 3, 2, 40, 8, 36, 6, 2, intermediate=37),
    TinySpec("deep", 48, 4, 3, 48, 16, 48, 2, 3, intermediate=64, act="gelu_new"),
]


def hf_config(spec: TinySpec):
    from transformers import BlipConfig

    text = dict(vocab_size=len(VOCAB) + 3, hidden_size=spec.text_hidden, intermediate_size=spec.intermediate,
                num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
                max_position_embeddings=64, hidden_act=spec.act, bos_token_id=DEC_ID, sep_token_id=SEP_ID,
                eos_token_id=SEP_ID, pad_token_id=0, layer_norm_eps=1e-12)
    vision = dict(hidden_size=spec.vision_hidden, intermediate_size=spec.intermediate + 3,
                  num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                  image_size=spec.image_size, patch_size=spec.patch_size, hidden_act=spec.act, layer_norm_eps=1e-5)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=24)


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name or "layer_norm" in name and name.endswith("weight") \
                    or "post_layernorm.weight" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5 * 1.5)


def write_support_files(folder: Path, image_size: int) -> None:
    wordpiece_tokenizer(VOCAB[5:-2]).save(str(folder / "tokenizer.json"))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": image_size, "width": image_size},
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "rescale_factor": 1 / 255}))


def build_hf(kind: str, spec: TinySpec, seed: int = 0):
    """kind: 'caption' | 'retrieval' | 'vqa' -> a randomised transformers model in eval mode."""
    import transformers

    cls = {"caption": transformers.BlipForConditionalGeneration,
           "retrieval": transformers.BlipForImageTextRetrieval,
           "vqa": transformers.BlipForQuestionAnswering}[kind]
    torch.manual_seed(seed)
    model = cls(hf_config(spec))
    randomize(model, seed)
    if kind != "retrieval":
        model.tie_weights()
    return model.eval()


def save_hf(model, folder: Path, spec: TinySpec) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    write_support_files(folder, spec.image_size)
    return folder


def share_vision(models: list) -> None:
    """Give every model the first one's vision encoder, as a union checkpoint has one."""
    vision = {k: v for k, v in models[0].state_dict().items() if k.startswith("vision_model.")}
    for m in models[1:]:
        m.load_state_dict(vision, strict=False)


def save_union(models: list, folder: Path, spec: TinySpec) -> Path:
    """One folder holding the union of the three layouts' weights (call share_vision first)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for m in models:
        for k, v in m.state_dict().items():
            if k != "text_decoder.cls.predictions.decoder.weight":
                state.setdefault(k, v.clone().contiguous())
    save_file(state, str(folder / "model.safetensors"))
    config = models[0].config.to_dict()
    config["architectures"] = [type(m).__name__ for m in models]
    (folder / "config.json").write_text(json.dumps(config))
    write_support_files(folder, spec.image_size)
    return folder
