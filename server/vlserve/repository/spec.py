"""model.toml: how one model folder is served. Every key is optional; unknown keys are an
error (a typo must not be silently ignored). A folder without model.toml is served with
defaults: its name is the folder's name, everything else follows the server settings.

    name = "blip-toy"
    family = "blip"
    tasks = ["caption", "vqa"]          # a subset of what the weights serve
    device = "auto"                     # auto | cpu | cuda | cuda:1
    dtype = "float32"                   # float32 | float16 | bfloat16
    attention = "auto"                  # auto | eager | sdpa | triton
    cross_attention = "auto"            # auto | cached | absorbed
    fusion_first_token = "[CLS]"        # ITM / question first token (default: by checkpoint origin)
    prompt = ""                         # default caption prompt
    runtime = "onnx"                    # torch | onnx, for every encoder graph the weights hold
    [runtime]                           # ... or, instead of the line above, per graph:
    vision = "onnx"                     # torch | onnx; likewise text and fusion (the decoder is torch only)
    onnx_dir = "onnx"                   # the ONNX files, under the model folder unless absolute;
                                        # exported on first load when absent or stale
    [batching]
    max_batch_size = 32
    max_queue_delay_ms = 5
    max_queue_size = 512
    max_decode_rows = 64
    [generation.caption]                # defaults for caption requests
    max_new_tokens = 20
    [generation.vqa]
    max_new_tokens = 10
    [vqa]
    answers = ["yes", "no"]             # candidates when a request asks to rank without listing them
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import CheckpointError
from ..settings import Settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(_Strict):
    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue_size: int | None = Field(None, ge=1)
    max_decode_rows: int | None = Field(None, ge=1)


class GenerationDefaults(_Strict):
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None


class Generation(_Strict):
    caption: GenerationDefaults = GenerationDefaults()
    vqa: GenerationDefaults = GenerationDefaults()


Runtime = Literal["torch", "onnx"]


class GraphRuntimes(_Strict):
    vision: Runtime = "torch"
    text: Runtime = "torch"
    fusion: Runtime = "torch"
    decoder: Literal["torch"] = "torch"  # its KV cache and continuous batching live in torch
    onnx_dir: str | None = None


class Vqa(_Strict):
    answers: list[str] = []


class ModelSpec(_Strict):
    name: str
    folder: Path
    family: Literal["blip"] = "blip"
    tasks: list[str] | None = None
    device: str | None = None
    dtype: str | None = None
    attention: str | None = None
    cross_attention: Literal["auto", "cached", "absorbed"] = "auto"
    fusion_first_token: Literal["[CLS]", "[ENC]"] | None = None
    prompt: str | None = None
    runtime: Runtime | GraphRuntimes = "torch"
    batching: Batching = Batching()
    generation: Generation = Generation()
    vqa: Vqa = Vqa()

    @classmethod
    def from_folder(cls, folder: Path) -> "ModelSpec":
        path = folder / "model.toml"
        raw = {}
        if path.is_file():
            try:
                raw = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise CheckpointError(f"{path}: {exc}") from exc
        raw.setdefault("name", folder.name)
        try:
            return cls(folder=folder, **raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CheckpointError(f"{path}: {problems}") from exc

    def onnx_graphs(self) -> tuple[str, ...]:
        """Encoder graphs on ONNX Runtime (the engine skips those the weights lack)."""
        r = self.runtime
        if isinstance(r, str):
            return ("vision", "text", "fusion") if r == "onnx" else ()
        return tuple(g for g in ("vision", "text", "fusion") if getattr(r, g) == "onnx")

    @property
    def onnx_dir(self) -> str | None:
        return None if isinstance(self.runtime, str) else self.runtime.onnx_dir

    def resolved_device(self, settings: Settings) -> str:
        device = self.device or settings.device
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return device


def is_model_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).exists() for n in ("model.toml", "config.json")) \
        or any(folder.glob("*.pth"))
