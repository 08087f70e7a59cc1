"""Tiny random BLIP folders written with our own modules (no transformers needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.tiny_blip import SEP_ID, VOCAB, randomize, write_support_files
from vlserve.families.blip.saver import save_blip
from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig
from vlserve.families.blip.model import Blip, Components

ALL = Components(text_encoder=True, text_encoder_cross=True, projections=True, itm_head=True,
                 text_decoder=True, decoder_roles=("answer", "caption"))


def tiny_config(width: int = 32, image: int = 32) -> BlipConfig:
    vision = VisionConfig(hidden_size=width, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                          image_size=image, patch_size=8)
    text = TextConfig(vocab_size=len(VOCAB), hidden_size=width, encoder_hidden_size=width, intermediate_size=40,
                      num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=48,
                      bos_token_id=VOCAB.index("[DEC]"), sep_token_id=SEP_ID)
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=16)


def make_folder(folder: Path, *, seed: int = 0, eos_bias: float = 2.0, config: BlipConfig | None = None) -> Path:
    config = config or tiny_config()
    model = Blip(config, ALL)
    randomize(model, seed)
    model.text_decoder.tie_weights()
    with torch.no_grad():
        model.text_decoder.cls.predictions.decoder.bias[SEP_ID] += eos_bias
    save_blip(model, folder)
    write_support_files(folder, config.vision.image_size)
    return folder
