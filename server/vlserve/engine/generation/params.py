"""Generation parameters and their validation (errors name the offending field)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from pydantic import BaseModel, ConfigDict, Field

from ...errors import InvalidInputError

# hard limits; a server may set lower ones (its settings), passed to `validate`
MAX_BEAMS = 16
MAX_NEW_TOKENS = 512
MAX_RETURN = 16
# Ranges inside which a decode step cannot overflow: logits / temperature and
# logits * repetition_penalty stay finite in fp32, gen_len ** length_penalty stays finite,
# top_k fits the int64 tensors the warp uses, a seed fits torch.Generator.
RANGES = {
    "temperature": (1e-4, 1e4),
    "repetition_penalty": (1e-4, 1e4),
    "length_penalty": (-10.0, 10.0),
    "top_k": (0, 1_000_000),
    "seed": (0, 2**63 - 1),
}


@dataclass(frozen=True)
class GenerationParams:
    """Defaults follow transformers' GenerationConfig (top_k=50 when sampling, no early stop)."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    num_return: int = 1  # captions per image

    def replace(self, **changes) -> "GenerationParams":
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in known and v is not None})

    def validate(self, max_new_tokens: int = MAX_NEW_TOKENS, max_beams: int = MAX_BEAMS) -> "GenerationParams":
        """Raise InvalidInputError naming the first bad field; the limits are the caller's."""
        max_new_tokens, max_beams = min(max_new_tokens, MAX_NEW_TOKENS), min(max_beams, MAX_BEAMS)

        def bad(param, why):
            raise InvalidInputError(f"{param} {why}", param=param)

        for name in ("length_penalty", "temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, f"must be a finite number, got {value!r}")
        if not 1 <= self.max_new_tokens <= max_new_tokens:
            bad("max_new_tokens", f"must be between 1 and {max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            bad("min_new_tokens", "must be between 0 and max_new_tokens")
        if not 1 <= self.num_beams <= max_beams:
            bad("num_beams", f"must be between 1 and {max_beams}")
        if not 1 <= self.num_return <= MAX_RETURN:
            bad("num_captions", f"must be between 1 and {MAX_RETURN}")
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                bad(name, f"must be between {low} and {high}" + (" (0 disables it)" if name == "top_k" else ""))
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1]")
        if self.do_sample and self.num_beams > 1:
            bad("num_beams", "beam search with sampling is not supported; use one or the other")
        if self.num_beams > 1 and self.num_return > self.num_beams:
            bad("num_captions", "cannot exceed num_beams")
        if self.num_beams == 1 and not self.do_sample and self.num_return > 1:
            bad("num_captions", "more than one per image needs do_sample or num_beams >= num_captions")
        return self


def shown(value) -> str:
    """A default or a bound as a description states it."""
    if value is None or isinstance(value, (bool, int)):
        return "unset" if value is None else str(value).lower()
    return f"{value:g}"


def _span(name: str) -> str:
    low, high = RANGES[name]
    return f"{shown(low)} to {shown(high)}"


# what each generation field does and its hard range; request schemas add the server's limits
MEANINGS = {
    "max_new_tokens": f"tokens to generate at most (EOS included), 1 to {MAX_NEW_TOKENS}",
    "min_new_tokens": "tokens to generate at least (EOS is held back until then), 0 to max_new_tokens",
    "num_beams": f"beam search width (1: greedy or sampling), 1 to {MAX_BEAMS}; not with do_sample",
    "length_penalty": f"beam search: a beam's log-probability is divided by its length to this power, "
                      f"{_span('length_penalty')}",
    "do_sample": "sample the tokens instead of picking the likeliest (greedy or beam search)",
    "top_p": "sampling: keep the likeliest tokens that hold this much probability, in (0, 1]",
    "top_k": f"sampling: keep the k likeliest tokens (0 disables it), {_span('top_k')}",
    "temperature": f"sampling: logits are divided by it, {_span('temperature')}",
    "seed": f"sampling: the random seed, for reproducible samples (unset: a fresh one each time), {_span('seed')}",
    "repetition_penalty": f"penalty on tokens already generated (1: none), {_span('repetition_penalty')}",
}


def default_note(name: str, defaults: "GenerationParams | None" = None, where: str = "model.toml") -> str:
    """'default: the model's (model.toml), else X', X the field's value in `defaults`."""
    value = getattr(defaults or GenerationParams(), name)
    return f"default: the model's ({where}), else {shown(value)}"


def _option(name: str, **limits):
    return Field(None, description=f"{MEANINGS[name]}; {default_note(name)}", **limits)


def _ranged(name: str):
    low, high = RANGES[name]
    return _option(name, ge=low, le=high)


class GenerationOptions(BaseModel):
    """The generation fields a request or a model.toml may set (None: not set). The one
    declaration of them: the wire schemas, model.toml and the CLI all derive from it.
    Upper limits of max_new_tokens and num_beams are the server's (validate's arguments)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_new_tokens: int | None = _option("max_new_tokens", ge=1)
    min_new_tokens: int | None = _option("min_new_tokens", ge=0)
    num_beams: int | None = _option("num_beams", ge=1)
    length_penalty: float | None = _ranged("length_penalty")
    do_sample: bool | None = _option("do_sample")
    top_p: float | None = _option("top_p", gt=0, le=1)
    top_k: int | None = _ranged("top_k")
    temperature: float | None = _ranged("temperature")
    seed: int | None = _ranged("seed")
    repetition_penalty: float | None = _ranged("repetition_penalty")

    def given(self) -> dict:
        """The fields that were set, as GenerationParams.replace takes them."""
        return {k: getattr(self, k) for k in GenerationOptions.model_fields if getattr(self, k) is not None}
