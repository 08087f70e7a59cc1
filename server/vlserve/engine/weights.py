"""Reading checkpoint files without copying them into memory twice.

safetensors (single file or sharded with an index) are memory-mapped by safe_open;
pickled files (`pytorch_model.bin`, `.pth`) are loaded with `weights_only=True, mmap=True`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# training checkpoints wrap the state dict: BLIP's and unilm's in "model", unilm's DDP ones in "module"
WRAPPER_KEYS = ("model", "module")


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    pth = sorted(folder.glob("*.pth"))
    if len(pth) == 1:
        return pth[0]
    if len(pth) > 1:
        raise CheckpointError(f"{folder}: several .pth files ({', '.join(p.name for p in pth)}); keep one")
    raise CheckpointError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_FILES)} or one *.pth)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.name.endswith(".safetensors"):
            return _read_safetensors(path)
        if path.name.endswith(".index.json"):
            index = json.loads(path.read_text())
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                state.update(_read_safetensors(path.parent / shard))
            return state
        with torch.serialization.safe_globals([argparse.Namespace]):  # training checkpoints keep their args
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt or foreign file: say which file and why
        raise CheckpointError(f"{path}: cannot read weights: {exc}") from exc
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return obj


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def check_finite(module: torch.nn.Module, limit: int = 5) -> None:
    """Refuse weights holding NaN or infinity (a corrupt file, or values the dtype cannot
    hold): such a model would answer null embeddings and empty captions. One pass over the
    weights, tensor by tensor, after they are on the device in their final dtype."""
    bad = []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
            if len(bad) > limit:
                break
    if bad:
        more = ", …" if len(bad) > limit else ""
        raise CheckpointError(f"weights are not finite (NaN or infinity) in: {', '.join(bad[:limit])}{more}")


def key_listing(missing: list[str], unexpected: list[str], limit: int = 12) -> str:
    """'N missing key(s): a, b, … M unexpected key(s): …' for a checkpoint error."""
    def part(what: str, keys: list[str]) -> str:
        if not keys:
            return ""
        more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
        return f"{len(keys)} {what} key(s): {', '.join(keys[:limit])}{more}. "
    return part("missing", missing) + part("unexpected", unexpected)
