"""The family contract: what every model family gives the rest of vlserve, and nothing more.

Everything above the families (tasks, scheduling, repository, api) sees a loaded model only
through this module; only the registry (repository/registry.py) names a family.

    Family              a folder's family: claims folders, validates its model.toml table, loads
    FamilyEngine        a loaded model: its Capabilities and the core graph operations
    Matcher, Captioner, AnswerGenerator, AnswerRanker, AnswerClassifier
                        optional capabilities (Protocols), each checked with isinstance
    DecoderGraph        what the shared decode loop (engine/generation/) drives

Image states are opaque to everyone but their family, with one rule: a tensor, or a
tuple of tensors, batched along dim 0, so batches can be joined, split and indexed
(`cat_states`, `split_states`, `index_states`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from PIL import Image
from pydantic import BaseModel, ValidationError

from ..errors import InvalidInputError, UnsupportedTaskError
from .images import decode_image
from .onnx.runtime import OrtOptions

# what a model may serve, named like the routes
TASKS = ("caption", "embed", "score", "rank", "vqa", "capfilt")
VQA_MODES = ("generate", "rank", "classify")

States = Any  # torch.Tensor | tuple[torch.Tensor, ...], batched along dim 0


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model serves, as /v1/models shows it."""

    tasks: tuple[str, ...]  # from TASKS
    score_heads: tuple[str, ...] = ()  # "itc" (embedding cosine), "itm" (match head)
    vqa_modes: tuple[str, ...] = ()  # from VQA_MODES
    embedding_dim: int | None = None
    max_text_tokens: int = 0  # tokens a text may have, special tokens included
    image_size: int = 0
    answers: tuple[str, ...] = ()  # the answer list VQA ranks or classifies over
    graphs: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineOptions:
    """Options every family takes; a family's own come from its model.toml table."""

    device: str = "cpu"
    dtype: str = "float32"
    attention: str = "auto"
    max_pixels: int = 64_000_000
    # encoder graphs run by ONNX Runtime instead of torch (ones the family or checkpoint lacks are ignored)
    onnx_graphs: tuple[str, ...] = ()
    onnx_dir: str | None = None  # None: <model folder>/onnx; relative paths are under the model folder
    ort: OrtOptions = field(default_factory=OrtOptions)
    # torch graphs whose linear layers run in int8 (models/int8.py; CPU only); the family maps
    # graph names to its modules, and graphs it lacks are ignored
    int8_graphs: tuple[str, ...] = ()


class Source(NamedTuple):
    """What one group of decoder rows is conditioned on: states (Lk, Dw), `length` of them real."""

    states: torch.Tensor
    length: int


class FamilyEngine(ABC):
    """A loaded model. Every method runs on the caller's thread (the scheduler's worker or
    the preprocessing pool); none touches the event loop."""

    family: ClassVar[str]
    device: torch.device
    dtype: torch.dtype
    int8_graphs: tuple[str, ...] = ()  # the graphs whose linear layers run in int8
    options: "EngineOptions"
    processor: Any  # RGB PIL images -> the input batch (engine/images.py), for the default `pixels`

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    def describe(self) -> dict:
        """Family-specific facts for /v1/models (attention backend, runtimes, ...)."""
        return {}

    def runtime(self, graph: str) -> str:
        """Which runtime runs a graph: "torch", with "-int8" when its linear layers are int8."""
        return "torch-int8" if graph in self.int8_graphs else "torch"

    def supports(self, capability: type) -> bool:
        """Whether this model (its checkpoint, not only its class) has an optional
        capability (Matcher, Captioner, ...); families override it per checkpoint."""
        return isinstance(self, capability)

    # -- core operations ------------------------------------------------------------------

    def pixels(self, images: list, params: list[str] | None = None) -> torch.Tensor:
        """Images (bytes, paths, PIL) -> the model's input batch; `params` name them in errors.
        By default through the engine's `processor` (RGB PIL images -> a batch tensor) under
        `options.max_pixels`."""
        if not images:
            raise InvalidInputError("at least one image is required", param="images")
        params = params or [f"images[{i}]" for i in range(len(images))]
        return self.processor([self.load_image(im, p) for im, p in zip(images, params)])

    def load_image(self, image, param: str = "images") -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), max_pixels=self.options.max_pixels, param=param)
        raise InvalidInputError(f"unsupported image type {type(image).__name__}", param=param)

    def stack_pixels(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> States: ...

    @abstractmethod
    def image_embeddings(self, states: States) -> torch.Tensor:
        """(B, E) float32, unit length."""

    @abstractmethod
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B, E) float32, unit length."""

    @abstractmethod
    def check_texts(self, texts: list[str], param: str = "texts") -> list[int]:
        """Raise the typed error tokenising would (empty, too long), naming the item; else
        each text's token count, special tokens included."""

    @abstractmethod
    def decode_text(self, tokens: list[int]) -> str: ...


@runtime_checkable
class Matcher(Protocol):
    def match(self, states: States, texts: list[str]) -> torch.Tensor:
        """(B,) match probability of each pair (states[i], texts[i])."""


@runtime_checkable
class Captioner(Protocol):
    """Captions from image states: the decoder reads what `caption_sources` gives."""

    caption_decoder: "DecoderGraph"

    def caption_prompt(self, prompt: str | None) -> list[int]:
        """Decoder input ids for a prompt (None: the model's default prompt)."""

    def caption_sources(self, states: States) -> list[Source]: ...


@runtime_checkable
class AnswerGenerator(Protocol):
    """Answers from a question about an image: a graph turns (image, question) into what
    the answer decoder reads."""

    answer_decoder: "DecoderGraph"

    def answer_prompt(self) -> list[int]: ...

    def question_sources(self, states: States, questions: list[str]) -> list[Source]: ...


@runtime_checkable
class AnswerRanker(Protocol):
    """Ranks given answers by the decoder's likelihood, conditioned on question sources."""

    def answer_loglik(self, items: list[tuple[Source, list[str]]]) -> list[torch.Tensor]:
        """log p(answer | source) for each candidate of each item: (C,) per item."""

    def answer_tokens(self, answer: str) -> list[int]: ...


@runtime_checkable
class AnswerClassifier(Protocol):
    """Answers from a fixed vocabulary (a classifier head)."""

    answers: tuple[str, ...]

    def classify(self, states: States, questions: list[str]) -> torch.Tensor:
        """(B, len(answers)) probabilities."""


@dataclass
class SourceView:
    """The live sources a decode step reads: each of the graph's per-source tensors sliced
    to the S live sources, their padding (S, Lk) True = padding, and which rows read which
    source (row_src, row_slot, slots) when a source has several rows (beams, samples)."""

    tensors: list[torch.Tensor]
    pad: torch.Tensor | None
    groups: tuple | None = None


@runtime_checkable
class DecoderGraph(Protocol):
    """A text decoder the shared loop steps. Each row keeps its own self-attention cache
    (per layer: keys and values (rows, heads, positions, head_dim)); each source keeps the
    tensors `source_tensors` made for it once, read by all of its rows. A graph may set
    `lookahead` (default 0): cache positions past its token that a step may write as
    scratch (BEiT-3's [MASK] query), which the cache then has room for."""

    eos_id: int
    layers: int
    heads: int
    head_dim: int
    max_positions: int
    device: torch.device
    dtype: torch.dtype
    source_length_dim: int  # the key-position dim of every tensor source_tensors returns

    def source_tensors(self, states: torch.Tensor) -> list[torch.Tensor]:
        """Right-padded sources (n, Lk, Dw) -> the per-source tensors steps read (dim 0 = source)."""

    def prefill(self, ids: torch.Tensor, lengths: torch.Tensor, cache: list, sources: SourceView) -> torch.Tensor:
        """Right-padded prompts (n, Lp), one row per source; fills the rows' caches.
        Returns float32 logits (n, V) at each prompt's last token."""

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: list, sources: SourceView,
             history: torch.Tensor | None = None) -> torch.Tensor:
        """One token per row at its position; returns float32 logits (R, V). `history` (R, L):
        each row's tokens so far (its prompt included), for graphs whose masks depend on them."""


class Family(ABC):
    """One model family as the registry sees it."""

    name: ClassVar[str]
    legacy_keys: ClassVar[tuple[str, ...]] = ()  # top-level model.toml keys that now live in its table

    @abstractmethod
    def claim(self, folder: Path) -> str | None:
        """None when this family serves the folder, else why not (shown to the user)."""

    table: ClassVar[type[BaseModel] | None] = None  # the pydantic model of its model.toml table

    def options(self, table: dict) -> Any:
        """The family's model.toml table, validated (raise ValueError naming the key)."""
        if self.table is None:
            if table:
                raise ValueError(f"the {self.name} family takes no options, got: {', '.join(table)}")
            return None
        try:
            return self.table(**table)
        except ValidationError as exc:
            raise ValueError("; ".join(f"{self.name}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                       for e in exc.errors())) from None

    @abstractmethod
    def load(self, folder: Path, options: EngineOptions, family_options: Any = None) -> FamilyEngine: ...

    def export_onnx(self, folder: Path, graphs: list[str] | None, out: Path | None, dtype: str) -> dict:
        """Export encoder graphs to ONNX (`vlserve export-onnx`); a report of what was written."""
        raise UnsupportedTaskError(f"the {self.name} family has no ONNX export", param="model")

    def merge(self, out: Path, folders: list[Path], prefer_first: bool = False) -> dict:
        """One folder holding the union of several checkpoints' weights (`vlserve merge`)."""
        raise UnsupportedTaskError(f"the {self.name} family cannot merge checkpoints", param="model")


# -- image states: tensors or tuples of tensors, batched along dim 0 -----------------------

def cat_states(parts: list[States]) -> States:
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def split_states(states: States, sizes: list[int]) -> list[States]:
    if isinstance(states, tuple):
        return [tuple(p) for p in zip(*(torch.split(t, sizes) for t in states))]
    return list(torch.split(states, sizes))


def index_states(states: States, index) -> States:
    if isinstance(states, tuple):
        return tuple(t[index] for t in states)
    return states[index]


def batch_size(states: States) -> int:
    return (states[0] if isinstance(states, tuple) else states).shape[0]


def derive_capabilities(engine: FamilyEngine, *, embedding_dim: int | None, max_text_tokens: int,
                        image_size: int, graphs: tuple[str, ...], answers: tuple[str, ...] = ()) -> Capabilities:
    """Capabilities from what the engine supports, by one rule for every family."""
    has = engine.supports
    heads = (("itc",) if embedding_dim else ()) + (("itm",) if has(Matcher) else ())
    modes = tuple(m for m, p in (("generate", AnswerGenerator), ("rank", AnswerRanker),
                                 ("classify", AnswerClassifier)) if has(p))
    served = {"caption": has(Captioner), "embed": bool(embedding_dim), "score": bool(heads),
              "rank": bool(embedding_dim), "vqa": bool(modes), "capfilt": has(Captioner) and has(Matcher)}
    return Capabilities(tasks=tuple(t for t in TASKS if served[t]), score_heads=heads, vqa_modes=modes,
                        embedding_dim=embedding_dim, max_text_tokens=max_text_tokens, image_size=image_size,
                        answers=answers, graphs=graphs)


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def check_int8(options: EngineOptions, device: torch.device) -> None:
    if options.int8_graphs and device.type != "cpu":
        raise ValueError(f"int8 linear layers run on the CPU only (this model is on {device}); use bfloat16 there")


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None
