"""Loading BLIP checkpoints: HuggingFace folders and original Salesforce `.pth` files.

The key maps are short tables of renames because our modules are named like the
checkpoints. Build on the meta device, assign the (memory-mapped) tensors, then move to
the device and dtype. Any missing or unexpected key is an error that names it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import CheckpointError
from .config import BlipConfig, TextConfig, VisionConfig
from .model import Blip, Components
from ...engine.weights import check_finite, find_weights, key_listing, read_state_dict

# (our key prefix, checkpoint key prefix); `{i}` stands for a layer index. Read left to
# right to export, right to left to load.
HF_NAMES = [
    ("vision.layers.", "vision_model.encoder.layers."),
    ("vision.", "vision_model."),
]
ORIGINAL_NAMES = [
    ("vision.embeddings.class_embedding", "visual_encoder.cls_token"),
    ("vision.embeddings.position_embedding", "visual_encoder.pos_embed"),
    ("vision.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
    ("vision.layers.{i}.layer_norm1.", "visual_encoder.blocks.{i}.norm1."),
    ("vision.layers.{i}.layer_norm2.", "visual_encoder.blocks.{i}.norm2."),
    ("vision.layers.{i}.self_attn.qkv.", "visual_encoder.blocks.{i}.attn.qkv."),
    ("vision.layers.{i}.self_attn.projection.", "visual_encoder.blocks.{i}.attn.proj."),
    ("vision.layers.{i}.mlp.", "visual_encoder.blocks.{i}.mlp."),
    ("vision.post_layernorm.", "visual_encoder.norm."),
]


def rename_table(names, *, to_ours: bool):
    """Regex rules (pattern, replacement) from a name table, in either direction."""
    rules = []
    for ours, theirs in names:
        src, dst = (theirs, ours) if to_ours else (ours, theirs)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("" if src.endswith(".") else "$")
        rules.append((pattern, dst.replace("{i}", r"\1")))
    return rules


HF_KEYS = rename_table(HF_NAMES, to_ours=True)
ORIGINAL_KEYS = rename_table(ORIGINAL_NAMES, to_ours=True)
# training-only state: momentum encoders, feature queues, temperature; non-persistent ids
IGNORED = re.compile(r"(^|\.)\w+_m(\.|$)|_queue$|^temp$|position_ids$|^text_encoder\.pooler\.|^logit_scale$")

LM_WEIGHT = "text_decoder.cls.predictions.decoder.weight"
LM_BIAS = "text_decoder.cls.predictions.decoder.bias"
LM_SHARED_BIAS = "text_decoder.cls.predictions.bias"
WORD_EMBEDDINGS = "text_decoder.bert.embeddings.word_embeddings.weight"


@dataclass(frozen=True)
class LoadedBlip:
    model: Blip
    origin: str  # "hf" or "original": decides [CLS] vs [ENC] as ITM / question first token
    weights_path: Path


def load_blip(folder: str | Path, *, device="cpu", dtype=torch.float32) -> LoadedBlip:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory")
    path = find_weights(folder)
    raw = read_state_dict(path)
    origin = "original" if any(k.startswith("visual_encoder.") for k in raw) else "hf"
    state = map_keys(raw, ORIGINAL_KEYS if origin == "original" else HF_KEYS)
    config = read_config(folder, state, origin)
    tied = config.text.tie_word_embeddings and WORD_EMBEDDINGS in state
    _resolve_lm_head(state, tied)
    model = build(config, components_of(state, decoder_roles(folder, state)), state)
    if tied:
        model.text_decoder.tie_weights()
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    check_finite(model)
    return LoadedBlip(model=model, origin=origin, weights_path=path)


def map_keys(raw: dict[str, torch.Tensor], table) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in raw.items():
        if IGNORED.search(key):
            continue
        for pattern, repl in table:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = tensor
    return out


def _resolve_lm_head(state: dict[str, torch.Tensor], tied: bool) -> None:
    """The LM projection is tied to the word embeddings; its bias lives at `cls.predictions.bias`."""
    if LM_SHARED_BIAS in state:
        state[LM_BIAS] = state.pop(LM_SHARED_BIAS)
    if tied:
        state[LM_WEIGHT] = state[WORD_EMBEDDINGS]


ARCHITECTURE_ROLES = {"BlipForConditionalGeneration": "caption", "BlipForQuestionAnswering": "answer"}


def decoder_roles(folder: Path, state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """config.json's `architectures` says what the decoder reads; else BLIP's layouts tell:
    a text encoder without retrieval heads beside the decoder is the VQA model."""
    cfg = folder / "config.json"
    archs = json.loads(cfg.read_text()).get("architectures") or [] if cfg.is_file() else []
    roles = tuple(sorted({ARCHITECTURE_ROLES[a] for a in archs if a in ARCHITECTURE_ROLES}))
    if roles:
        return roles
    keys = state.keys()
    vqa_layout = any(k.startswith("text_encoder.") for k in keys) and "itm_head.weight" not in keys \
        and "vision_proj.weight" not in keys
    return ("answer",) if vqa_layout else ("caption",)


def components_of(state: dict[str, torch.Tensor], roles: tuple[str, ...] = ("caption",)) -> Components:
    keys = state.keys()
    return Components(
        decoder_roles=roles,
        text_encoder=any(k.startswith("text_encoder.") for k in keys),
        text_encoder_cross=any(k.startswith("text_encoder.") and ".crossattention." in k for k in keys),
        projections="vision_proj.weight" in keys and "text_proj.weight" in keys,
        itm_head="itm_head.weight" in keys,
        text_decoder=any(k.startswith("text_decoder.") for k in keys),
    )


def build(config: BlipConfig, components: Components, state: dict[str, torch.Tensor]) -> Blip:
    with torch.device("meta"):
        model = Blip(config, components)
    expected = set(model.state_dict().keys())
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError("checkpoint does not match the BLIP architecture: " + key_listing(missing, unexpected))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches: config.json disagrees with the weights
        raise CheckpointError(f"weights do not fit config.json: {exc}") from exc
    return model


def read_config(folder: Path, state: dict[str, torch.Tensor], origin: str) -> BlipConfig:
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        raw = json.loads(cfg_path.read_text())
        if "vision_config" in raw or "text_config" in raw:
            return BlipConfig.from_hf_dict(raw)
    if origin != "original":
        raise CheckpointError(f"{folder}: config.json with vision_config/text_config is required")
    med = folder / "med_config.json"
    return config_from_original(state, json.loads(med.read_text()) if med.is_file() else {})


def config_from_original(state: dict[str, torch.Tensor], med: dict) -> BlipConfig:
    """Sizes from the tensors; heads from med_config.json, else width / 64 as in ViT-B/L and BERT."""
    pos = state["vision.embeddings.position_embedding"]
    patch = state["vision.embeddings.patch_embedding.weight"].shape[-1]
    width = pos.shape[-1]
    grid = math.isqrt(pos.shape[1] - 1)
    vision = VisionConfig(
        hidden_size=width,
        intermediate_size=state["vision.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(state, r"^vision\.layers\.(\d+)\."),
        num_attention_heads=width // 64,
        image_size=grid * patch,
        patch_size=patch,
        layer_norm_eps=1e-6,  # timm ViT, as the original BLIP uses
    )
    prefix = "text_encoder" if "text_encoder.embeddings.word_embeddings.weight" in state else "text_decoder.bert"
    words = state[f"{prefix}.embeddings.word_embeddings.weight"]
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        encoder_hidden_size=width,
        intermediate_size=state[f"{prefix}.encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count(state, rf"^{re.escape(prefix)}\.encoder\.layer\.(\d+)\."),
        num_attention_heads=int(med.get("num_attention_heads", words.shape[1] // 64)),
        max_position_embeddings=state[f"{prefix}.embeddings.position_embeddings.weight"].shape[0],
        hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)),
    )
    embed = state["vision_proj.weight"].shape[0] if "vision_proj.weight" in state else 256
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=embed)


def _count(state, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def original_state_dict(model: Blip) -> dict[str, torch.Tensor]:
    """Our weights under the original BLIP `.pth` key names (for export and round-trip tests)."""
    inverse = rename_table(ORIGINAL_NAMES, to_ours=False)
    return map_keys(dict(model.state_dict()), inverse)


def hf_state_dict(model: Blip) -> dict[str, torch.Tensor]:
    """Our weights under transformers' key names (what `save_pretrained` would write)."""
    state = map_keys(dict(model.state_dict()), rename_table(HF_NAMES, to_ours=False))
    if LM_BIAS in state:
        state[LM_SHARED_BIAS] = state[LM_BIAS]
    return state
