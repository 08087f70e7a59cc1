"""CLIP's byte-level BPE tokenizer, as open_clip tokenizes CoCa's text, built on the
`tokenizers` library (open_clip is never imported).

The merges are OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz` (MIT licence, Copyright (c)
2021 OpenAI), shipped beside this file: a CoCa checkpoint folder holds no vocabulary, and
nothing is downloaded. It is byte for byte the file open_clip 3.3 ships
(sha256 924691ac…804a). Vocabulary: 256 byte symbols, the same with `</w>`, 48,894 merges,
then <start_of_text> (49406) and <end_of_text> (49407): 49,408 ids.

Cleaning as open_clip's default ("lower"): HTML entities unescaped twice, whitespace
collapsed, lower case. One difference: open_clip also runs ftfy's mojibake repair; vlserve
does not (text that is already valid Unicode tokenises the same).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from ...errors import InvalidInputError, TextTooLongError

MERGES = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT, EOT = "<start_of_text>", "<end_of_text>"
# CLIP's pre-tokenisation: contractions, runs of letters, single digits, runs of other symbols
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(1)
def byte_symbols() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable symbol table, in the order the vocabulary
    lists them: the printable bytes as themselves, then the rest shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + len(table) - len(printable))
    return table


@lru_cache(1)
def _bpe() -> tuple[Tokenizer, dict[int, str]]:
    lines = gzip.open(MERGES).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(byte_symbols().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok, {i: t for t, i in vocab.items()}


def clean(text: str) -> str:
    return " ".join(html.unescape(html.unescape(text)).strip().split()).lower()


class ClipTokenizer:
    def __init__(self, context_length: int, pad_id: int = 0):
        self.tok, self.id_to_token = _bpe()
        self.context_length, self.pad_id = context_length, pad_id
        self.sot_id, self.eot_id = self.tok.token_to_id(SOT), self.tok.token_to_id(EOT)
        self.byte_of = {s: b for b, s in byte_symbols().items()}

    def _ids(self, text: str, param: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text must be a non-empty string", param=param)
        ids = [self.sot_id] + self.tok.encode(clean(text)).ids + [self.eot_id]
        if len(ids) > self.context_length:
            raise TextTooLongError(f"text has {len(ids)} tokens; this model reads at most {self.context_length}",
                                   param=param)
        return ids

    def validate(self, texts: list[str], param: str = "texts") -> list[int]:
        return [len(self._ids(t, f"{param}[{i}]")) for i, t in enumerate(texts)]

    def encode_batch(self, texts: list[str], param: str = "texts") -> torch.Tensor:
        """(B, context_length) ids padded with pad_id, as open_clip's tokenizer returns them."""
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self._ids(t, f"{param}[{i}]")
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def encode_prompt(self, prompt: str | None) -> list[int]:
        """Decoder input: <start_of_text> + the prompt's tokens (no <end_of_text>)."""
        return [self.sot_id] + (self.tok.encode(clean(prompt)).ids if prompt else [])

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.id_to_token[i] for i in ids if i not in (self.sot_id, self.eot_id))
        words = [bytes(self.byte_of[c] for c in piece) for piece in text.split("</w>")]
        return b" ".join(words).decode("utf-8", errors="replace").strip()
