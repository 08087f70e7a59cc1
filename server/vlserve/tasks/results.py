"""What tasks return: plain data, ready for the wire schemas."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caption:
    text: str  # without the prompt
    tokens: list[int]  # generated ids after BOS and prompt, EOS excluded
    logprob: float  # the model's log-probability of the generated ids (EOS included when emitted)


@dataclass(frozen=True)
class Ranked:
    index: int
    itc: float
    itm: float | None = None


@dataclass(frozen=True)
class RankedAnswer:
    text: str
    prob: float


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: list[int]
    logprob: float
    ranked: list[RankedAnswer] | None = field(default=None)


@dataclass(frozen=True)
class FilteredCaption:
    text: str
    source: str  # "web" (given) or "synthetic" (sampled by the captioner)
    itm: float  # the filter's match probability
    kept: bool
