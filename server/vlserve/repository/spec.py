"""model.toml: how one model folder is served. Every key is optional; unknown keys are an
error (a typo must not be silently ignored). A folder without model.toml is served with
defaults: its name is the folder's name, its family is the one that claims the folder
(repository/registry.py), everything else follows the server settings.

    name = "blip-toy"
    family = "blip"                     # default: the family that claims the folder
    default = true                      # the model a request that names none gets, when several serve its task
    tasks = ["caption", "vqa"]          # a subset of what the weights serve (route names)
    device = "auto"                     # auto | cpu | cuda | cuda:1
    dtype = "float32"                   # float32 | float16 | bfloat16
    precision = "int8"                  # fp32 | bf16 | int8: instead of dtype; int8 = float32 with int8
                                        # linear layers in the graphs that gain (CPU only)
    int8_graphs = ["decoder"]           # with int8: which graphs (default: vision and the decoder, and
                                        # every graph on ONNX Runtime)
    attention = "auto"                  # auto | eager | sdpa | triton
    runtime = "onnx"                    # torch | onnx, for every encoder graph the weights hold
    [runtime]                           # ... or, instead of the line above, per graph:
    vision = "onnx"                     # torch | onnx; likewise text and fusion (decoders are torch only)
    onnx_dir = "onnx"                   # the ONNX files, under the model folder unless absolute;
                                        # exported on first load when absent or stale
    image_cache_bytes = 268435456       # vision states kept for repeated images; 0 = off
    [batching]
    max_batch_size = 32
    max_queue_delay_ms = 5
    max_queue_size = 512
    max_decode_rows = 64
    [generation.caption]                # defaults for caption requests (any generation field)
    max_new_tokens = 20
    [generation.vqa]
    max_new_tokens = 10
    [vqa]
    answers = ["yes", "no"]             # candidates when a request asks to rank without listing them
    [blip]                              # the family's own table (families/blip/engine.py BlipOptions)
    cross_attention = "auto"            # auto | cached | absorbed
    fusion_first_token = "[CLS]"        # ITM / question first token (default: by checkpoint origin)
    prompt = ""                         # default caption prompt

A family's keys written at the top level (as before the family tables) still work: they
move into the family's table with a warning in the log and in /v1/models.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..engine.family import TASKS
from ..engine.generation.params import GenerationOptions
from ..errors import CheckpointError
from ..settings import Settings
from . import registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(_Strict):
    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue_size: int | None = Field(None, ge=1)
    max_decode_rows: int | None = Field(None, ge=1)


class Generation(_Strict):
    caption: GenerationOptions = GenerationOptions()
    vqa: GenerationOptions = GenerationOptions()


Runtime = Literal["torch", "onnx"]
ENCODER_GRAPHS = ("vision", "text", "fusion")


class GraphRuntimes(_Strict):
    vision: Runtime = "torch"
    text: Runtime = "torch"
    fusion: Runtime = "torch"
    decoder: Literal["torch"] = "torch"  # its KV cache and continuous batching live in torch
    onnx_dir: str | None = None


class Vqa(_Strict):
    answers: list[str] = []


TaskName = Literal[TASKS]  # type: ignore[valid-type]
Precision = Literal["fp32", "bf16", "int8"]
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": "float32"}
GraphName = Literal["vision", "text", "fusion", "decoder"]
# int8's default graphs, by measurement (bench/int8.py, BLIP-base at batch 8 on this workplace's
# CPU, two runs): decoding 1.3-1.6x, the vision encoder 1.4-1.5x on torch (2.1x on ONNX Runtime, also
# the default for every graph on it); text and fusion not measured yet, so float32 unless listed
INT8_TORCH_GRAPHS = ("vision", "decoder")


class ModelSpec(_Strict):
    name: str
    folder: Path
    family: str | None = None
    default: bool = False
    tasks: list[TaskName] | None = None
    device: str | None = None
    dtype: str | None = None
    precision: Precision | None = None
    int8_graphs: list[GraphName] | None = None
    attention: str | None = None
    runtime: Runtime | GraphRuntimes = "torch"
    image_cache_bytes: int | None = Field(None, ge=0)  # None: the server's setting
    batching: Batching = Batching()
    generation: Generation = Generation()
    vqa: Vqa = Vqa()
    family_options: Any = None  # the family's table, validated by the family
    warnings: list[str] = []

    @model_validator(mode="after")
    def _one_precision(self):
        if self.precision is not None and self.dtype is not None:
            raise ValueError("give precision or dtype, not both (precision fp32 | bf16 | int8 sets the dtype)")
        if self.int8_graphs is not None and self.precision != "int8":
            raise ValueError("int8_graphs needs precision = \"int8\"")
        return self

    @classmethod
    def from_folder(cls, folder: Path, name: str | None = None) -> "ModelSpec":
        """The folder's model.toml, its family (named or claimed) and that family's table.
        Raise CheckpointError saying what is wrong; a folder no family claims raises
        UnclaimedFolder with every family's reason."""
        path = folder / "model.toml"
        raw: dict = {}
        if path.is_file():
            try:
                raw = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise CheckpointError(f"{path}: {exc}") from exc
        raw.setdefault("name", name or folder.name)
        warnings = []
        if raw.get("tasks") and "itm" in raw["tasks"]:
            raw["tasks"] = [t for t in raw["tasks"] if t != "itm"] + ["score", "rank"]
            warnings.append("model.toml: task 'itm' is now named by its routes: 'score' and 'rank'")
        tables = {n: raw.pop(n) for n in registry.names() if n in raw}
        family_name = raw.get("family")
        if family_name is None:
            family_name, why = registry.sniff(folder)
            if family_name is None:
                raise UnclaimedFolder(why)
            raw["family"] = family_name
        family = registry.family(family_name)
        table = dict(tables.pop(family_name, {}))
        for key in family.legacy_keys:
            if key in raw:
                table.setdefault(key, raw.pop(key))
                warnings.append(f"model.toml: top-level '{key}' is deprecated; write it under [{family_name}]")
        if tables:
            raise CheckpointError(f"{path}: tables {', '.join(f'[{t}]' for t in tables)} are for other families "
                                  f"than this folder's '{family_name}'")
        try:
            spec = cls(folder=folder, **raw)
            spec.family_options = family.options(table)
        except (ValidationError, ValueError) as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
                if isinstance(exc, ValidationError) else str(exc)
            raise CheckpointError(f"{path}: {problems}") from exc
        spec.warnings = warnings
        return spec

    def onnx_graphs(self) -> tuple[str, ...]:
        """Encoder graphs on ONNX Runtime (the engine skips those the weights lack)."""
        r = self.runtime
        if isinstance(r, str):
            return ENCODER_GRAPHS if r == "onnx" else ()
        return tuple(g for g in ENCODER_GRAPHS if getattr(r, g) == "onnx")

    @property
    def onnx_dir(self) -> str | None:
        return None if isinstance(self.runtime, str) else self.runtime.onnx_dir

    def resolved_precision(self, settings: Settings) -> tuple[str, tuple[str, ...]]:
        """(dtype, int8 graphs): the model's precision or dtype, else the server's."""
        if self.precision is None and self.dtype is not None:
            return self.dtype, ()
        precision = self.precision or settings.precision
        return (settings.dtype, ()) if precision is None else self.precision_options(precision)

    def precision_options(self, precision: str) -> tuple[str, tuple[str, ...]]:
        """(dtype, int8 graphs) of a precision for this model (its int8_graphs, else the defaults)."""
        if precision not in PRECISION_DTYPES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got {precision!r}")
        if precision != "int8":
            return PRECISION_DTYPES[precision], ()
        graphs = self.int8_graphs if self.int8_graphs is not None else INT8_TORCH_GRAPHS + self.onnx_graphs()
        return PRECISION_DTYPES[precision], tuple(dict.fromkeys(graphs))

    def resolved_device(self, settings: Settings) -> str:
        device = self.device or settings.device
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return device


class UnclaimedFolder(CheckpointError):
    """No family serves this folder (the message gives every family's reason)."""
