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


def _ranged(name: str, description: str | None = None):
    low, high = RANGES[name]
    return Field(None, ge=low, le=high, description=description)


class GenerationOptions(BaseModel):
    """The generation fields a request or a model.toml may set (None: not set). The one
    declaration of them: the wire schemas, model.toml and the CLI all derive from it.
    Upper limits of max_new_tokens and num_beams are the server's (validate's arguments)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_new_tokens: int | None = Field(None, ge=1, description="tokens to generate at most (EOS included)")
    min_new_tokens: int | None = Field(None, ge=0)
    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = _ranged("length_penalty")
    do_sample: bool | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = _ranged("top_k", "0 disables it")
    temperature: float | None = _ranged("temperature")
    seed: int | None = _ranged("seed")
    repetition_penalty: float | None = _ranged("repetition_penalty")

    def given(self) -> dict:
        """The fields that were set, as GenerationParams.replace takes them."""
        return {k: getattr(self, k) for k in GenerationOptions.model_fields if getattr(self, k) is not None}
