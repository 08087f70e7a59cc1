"""Writing a BLIP model in the HuggingFace layout (config.json + model.safetensors), as
transformers' BLIP classes load it. Used for models trained here and for tests."""

from __future__ import annotations

import json
from pathlib import Path

from .model import Blip
from .loader import LM_WEIGHT, hf_state_dict

ROLE_ARCHITECTURES = {"caption": "BlipForConditionalGeneration", "answer": "BlipForQuestionAnswering"}


def save_blip(model: Blip, folder: str | Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict(model)
    if model.config.text.tie_word_embeddings:
        state.pop(LM_WEIGHT, None)  # tied to the word embeddings, as transformers saves it
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = model.config.to_hf_dict()
    archs = [ROLE_ARCHITECTURES[r] for r in model.components.decoder_roles if model.components.text_decoder]
    if model.components.projections or model.components.itm_head:
        archs.append("BlipForImageTextRetrieval")
    config["architectures"] = archs or ["BlipForImageTextRetrieval"]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
