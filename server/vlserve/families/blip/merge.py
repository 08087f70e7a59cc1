"""`vlserve merge OUT DIR...`: one folder holding the union of several BLIP checkpoints'
weights (say a captioning, a retrieval and a VQA folder), so every task, CapFilt included,
is served from one set of graphs.

Each part of the model (vision, text_encoder, projections, itm_head, text_decoder) is
taken from the folders that hold it. Where two folders hold *different* weights for the
same part, merging changes what the others' tasks compute, so it is refused unless
`prefer_first` keeps the first listed folder's part; the report then names every such
part and how far the weights differ. The public Salesforce checkpoints are such a case
(each task fine-tuned its own ViT and text transformer): for them, composing models per
request (CapFilt's `captioner` / `filter`, rank's `reranker`) serves each task with its
own weights.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from ...errors import InvalidInputError
from .loader import load_blip
from .model import Blip, Components
from .saver import save_blip

PARTS = {"vision": ("vision.",), "text_encoder": ("text_encoder.",), "projections": ("vision_proj.", "text_proj."),
         "itm_head": ("itm_head.",), "text_decoder": ("text_decoder.",)}
SUPPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                 "preprocessor_config.json", "processor_config.json")


def _part_of(key: str) -> str:
    return next(part for part, prefixes in PARTS.items() if key.startswith(prefixes))


def _tokenizer_file(folder: Path) -> bytes | None:
    for name in ("tokenizer.json", "vocab.txt"):
        if (folder / name).is_file():
            return (folder / name).read_bytes()
    return None


def merge(out: Path, folders: list[Path], prefer_first: bool = False) -> dict:
    if out.exists():
        raise InvalidInputError(f"{out} exists; merge writes a new folder", param="out")
    if len(folders) < 2:
        raise InvalidInputError("give at least two folders to merge", param="folders")
    loaded = [load_blip(f) for f in folders]
    configs = {dataclasses.replace(m.model.config, image_text_hidden_size=0) for m in loaded}
    if len(configs) != 1:
        raise InvalidInputError("the checkpoints have different architectures (config.json); they cannot share "
                                "one set of graphs", param="folders")
    if len({_tokenizer_file(f) for f in folders}) != 1:
        raise InvalidInputError("the checkpoints have different tokenizers", param="folders")
    if len({m.origin for m in loaded}) != 1:
        raise InvalidInputError("mix of HF-layout and original .pth checkpoints; convert them to one layout first",
                                param="folders")

    state, source, conflicts = {}, {}, {}
    for folder, m in zip(folders, loaded):
        for key, tensor in m.model.state_dict().items():
            part = _part_of(key)
            if part in source and source[part] != folder:
                if key in state and not torch.equal(state[key], tensor):
                    diff = float((state[key].float() - tensor.float()).abs().max())
                    worst = conflicts.setdefault(part, {"part": part, "kept": str(source[part]),
                                                        "dropped": [], "max_abs_diff": 0.0})
                    if str(folder) not in worst["dropped"]:
                        worst["dropped"].append(str(folder))
                    worst["max_abs_diff"] = max(worst["max_abs_diff"], diff)
                continue
            source.setdefault(part, folder)
            state[key] = tensor
    if conflicts and not prefer_first:
        named = "; ".join(f"{c['part']} (max |diff| {c['max_abs_diff']:.3g})" for c in conflicts.values())
        raise InvalidInputError(f"the checkpoints hold different weights for: {named}. Merging would change what "
                                "some tasks compute; pass --prefer-first to keep the first folder's, or serve the "
                                "folders side by side and compose them per request", param="folders")

    decoder_from = source.get("text_decoder")
    roles = set()
    for folder, m in zip(folders, loaded):
        c = m.model.components
        same_decoder = c.text_decoder and ("text_decoder" not in conflicts or folder == decoder_from
                                           or str(folder) not in conflicts["text_decoder"]["dropped"])
        if same_decoder:
            roles |= set(c.decoder_roles)
    flags = [m.model.components for m in loaded]
    components = Components(
        text_encoder=any(c.text_encoder for c in flags), text_encoder_cross=any(c.text_encoder_cross for c in flags),
        projections=any(c.projections for c in flags), itm_head=any(c.itm_head for c in flags),
        text_decoder=any(c.text_decoder for c in flags), decoder_roles=tuple(sorted(roles)) or ("caption",))
    config = next(m.model.config for m in loaded if m.model.components.projections) \
        if components.projections else loaded[0].model.config
    with torch.device("meta"):
        model = Blip(config, components)
    model.load_state_dict(state, strict=True, assign=True)
    if components.text_decoder and config.text.tie_word_embeddings:
        model.text_decoder.tie_weights()
    save_blip(model, out)
    for name in SUPPORT_FILES:
        if (folders[0] / name).is_file():
            shutil.copy2(folders[0] / name, out / name)
    if loaded[0].origin == "original":  # keep what the .pth origin decided (engine.py BlipOptions)
        (out / "model.toml").write_text('family = "blip"\n[blip]\nfusion_first_token = "[ENC]"\n'
                                        'prompt = "a picture of "\n')
    report = {"out": str(out), "parts": {p: str(f) for p, f in source.items()},
              "decoder_roles": list(components.decoder_roles), "conflicts": list(conflicts.values())}
    (out / "merge.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
