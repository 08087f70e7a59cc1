"""Loading BEiT-3 checkpoints as unilm ships them: one fine-tuned checkpoint per folder (a
`.pth` with the state dict under `model` or `module`, or a `.safetensors`/`.bin`), beside
the XLM-R sentencepiece model `beit3.spm` and, for VQA, unilm's `answer2label.txt` (one
JSON object per line: {"answer": ..., "label": i}). Sizes come from the weights
(config.py); the folder and file names never decide anything.

Our modules carry torchscale's and unilm's names, so there is no key map: build on the
meta device, assign the memory-mapped tensors, name every missing or unexpected key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ...engine.weights import check_finite, key_listing, read_state_dict
from ...errors import CheckpointError
from .config import PREFIX, Beit3Config
from .model import Beit3Model

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
SPM = "beit3.spm"
ANSWERS = "answer2label.txt"


@dataclass(frozen=True)
class LoadedBeit3:
    model: Beit3Model
    answers: tuple[str, ...]
    weights_path: Path


def find_checkpoint(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(f"{folder}: no BEiT-3 weights (one {'/'.join(SUFFIXES)} file)")
    raise CheckpointError(f"{folder}: several checkpoints ({', '.join(p.name for p in found)}); keep one")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    state = read_state_dict(find_checkpoint(folder))
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_beit3(state: dict) -> bool:
    return any(k.startswith(PREFIX + "encoder.layers.") for k in state)


def read_answers(path: Path, count: int) -> tuple[str, ...]:
    """unilm's answer2label.txt, checked against the classifier's width."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: the VQA head has {count} answers but there is no {ANSWERS} "
                              "(one {\"answer\": ..., \"label\": i} per line, as unilm writes it)")
    answers: list[str] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            answer, label = str(entry["answer"]), int(entry["label"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: line {i + 1} is not {{\"answer\": ..., \"label\": ...}} ({exc})") from None
        if label != len(answers):
            raise CheckpointError(f"{path}: line {i + 1} has label {label}; labels must count up from 0")
        answers.append(answer)
    if len(answers) != count:
        raise CheckpointError(f"{path}: {len(answers)} answers for a VQA head of {count}")
    return tuple(answers)


def load_beit3(folder: str | Path, *, heads: int | None = None, eps: float | None = None, device="cpu",
               dtype=torch.float32) -> LoadedBeit3:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory")
    path = find_checkpoint(folder)
    state = read_weights(folder)
    try:
        config = Beit3Config.from_state_dict(state, heads=heads, **({} if eps is None else {"eps": eps}))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    answers = read_answers(folder / ANSWERS, config.answers) if config.answers else ()
    with torch.device("meta"):
        model = Beit3Model(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the BEiT-3 architecture its weights imply: "
                              + key_listing(missing, unexpected))
    if "logit_scale" in state and state["logit_scale"].dim():
        state["logit_scale"] = state["logit_scale"].reshape(())
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the configuration: {exc}") from exc
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    check_finite(model)
    model.pack()
    return LoadedBeit3(model, answers, path)


def unilm_state_dict(model: Beit3Model) -> dict[str, torch.Tensor]:
    """Our weights under unilm's names (the same names), contiguous and on the CPU."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_beit3(model: Beit3Model, folder: str | Path, answers: tuple[str, ...] = (), spm: Path | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """A folder unilm's classes load: `beit3.pth` ({"model": state dict}, as unilm's
    `load_model_and_may_interpolate` reads it), the sentencepiece model, answer2label.txt."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = unilm_state_dict(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": state}, folder / "beit3.pth")
    if answers:
        lines = [json.dumps({"answer": a, "label": i}) for i, a in enumerate(answers)]
        (folder / ANSWERS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if spm is not None and Path(spm).resolve() != (folder / SPM).resolve():
        (folder / SPM).write_bytes(Path(spm).read_bytes())
    return folder
