"""Loading CoCa checkpoints the way users have them:

- open_clip's hub layout: `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) beside
  `open_clip_model.safetensors` or `open_clip_pytorch_model.bin` (e.g.
  laion/CoCa-ViT-L-14-laion2B-s13B-b90k);
- a bare checkpoint (`.pt`, `.pth`, `.bin` or `.safetensors`, open_clip's training
  checkpoints included: `state_dict`, `module.` prefixes) with model.toml's
  `[coca] architecture` naming one of config.ARCHITECTURES.

Our modules carry open_clip's names, so there is no key map: build on the meta device,
assign the memory-mapped tensors, name every missing or unexpected key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ...engine.weights import check_finite, key_listing, read_state_dict
from ...errors import CheckpointError
from .config import ARCHITECTURES, CocaConfig
from .text import Coca

CONFIG = "open_clip_config.json"
PREFERRED = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
             "open_clip_pytorch_model.pth")
SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class LoadedCoca:
    model: Coca
    preprocess: dict  # open_clip_config.json's preprocess_cfg ({} when absent)
    weights_path: Path


def find_checkpoint(folder: Path) -> Path:
    for name in PREFERRED:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(f"{folder}: no CoCa weights (looked for {', '.join(PREFERRED)} or one "
                              f"{'/'.join(SUFFIXES)} file)")
    raise CheckpointError(f"{folder}: several checkpoints ({', '.join(p.name for p in found)}); keep one")


def read_config(folder: Path, architecture: str | None) -> tuple[CocaConfig, dict]:
    """(the architecture, preprocess_cfg) from open_clip_config.json, else from model.toml's name."""
    path = folder / CONFIG
    try:
        if path.is_file():
            raw = json.loads(path.read_text())
            return CocaConfig.from_open_clip(raw.get("model_cfg", raw)), raw.get("preprocess_cfg") or {}
        if architecture is None:
            raise CheckpointError(f"{folder}: no {CONFIG}; name the architecture in model.toml ([coca] "
                                  f"architecture = one of {', '.join(ARCHITECTURES)})")
        if architecture not in ARCHITECTURES:
            raise CheckpointError(f"unknown CoCa architecture '{architecture}'; served: {', '.join(ARCHITECTURES)}")
        return CocaConfig.from_open_clip(ARCHITECTURES[architecture]), {}
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path if path.is_file() else folder}: {exc}") from exc


def _state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in (".pt", ".pth", ".bin") and path.name != "open_clip_pytorch_model.bin":
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # open_clip's training checkpoints
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: not a state dict of tensors")
        state = obj
    else:
        state = read_state_dict(path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_coca(folder: str | Path, *, architecture: str | None = None, device="cpu",
              dtype=torch.float32) -> LoadedCoca:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory")
    config, preprocess = read_config(folder, architecture)
    path = find_checkpoint(folder)
    state = _state(path)
    with torch.device("meta"):
        model = Coca(config)
    expected = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].dim() == 1:  # nonscalar_logit_scale
        state["logit_scale"] = state["logit_scale"].reshape(())
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError("checkpoint does not match the CoCa architecture: " + key_listing(missing, unexpected))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches: the config disagrees with the weights
        raise CheckpointError(f"weights do not fit the configuration: {exc}") from exc
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    check_finite(model)
    return LoadedCoca(model, preprocess, path)


def open_clip_state_dict(model: Coca) -> dict[str, torch.Tensor]:
    """Our weights as open_clip names them (the same names), contiguous and on the CPU."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_coca(model: Coca, folder: str | Path, preprocess: dict | None = None) -> Path:
    """open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors, which
    `open_clip.create_model("local-dir:FOLDER")` loads."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(open_clip_state_dict(model), str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": model.config.to_open_clip(), "preprocess_cfg": preprocess or {}}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder
