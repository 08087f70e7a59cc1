"""BEiT-3's text ids: the XLM-R sentencepiece model (`beit3.spm`) with the fairseq id layout
unilm gets from `XLMRobertaTokenizer(beit3.spm)`:

    <s> 0 (bos, also the [CLS] captions start from)   <pad> 1   </s> 2 (eos)   <unk> 3
    sentencepiece piece i > 0 -> i + 1 (its unknown piece 0 -> 3)   <mask> len(spm) + 1

A text is [bos] + its pieces + [eos] (unilm's `_get_text_segment`), right-padded with
<pad>. Texts over the model's limit are refused, not cut. Literal special-token strings in
a text ("<mask>") stay text here, where transformers' tokenizer would turn them into the
special ids: a request must not be able to inject a mask or an end of text.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import InvalidInputError, TextTooLongError

BOS, PAD, EOS, UNK = 0, 1, 2, 3
OFFSET = 1  # fairseq's: piece i of the sentencepiece model is id i + 1


class Beit3Tokenizer:
    def __init__(self, path: str | Path, max_tokens: int):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.pieces = self.sp.get_piece_size()
        self.mask_id = self.pieces + OFFSET
        self.vocab_size = self.mask_id + 1
        self.max_tokens = max_tokens
        self.bos_id, self.pad_id, self.eos_id = BOS, PAD, EOS

    def pieces_ids(self, text: str) -> list[int]:
        return [i + OFFSET if i else UNK for i in self.sp.encode(text)]

    def ids(self, text: str) -> list[int]:
        return [BOS] + self.pieces_ids(text) + [EOS]

    def validate(self, texts: list[str], param: str = "texts") -> list[list[int]]:
        out = []
        for i, text in enumerate(texts):
            name = f"{param}[{i}]"
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError("text must be a non-empty string", param=name)
            ids = self.ids(text)
            if len(ids) > self.max_tokens:
                raise TextTooLongError(f"text is {len(ids)} tokens (with <s> and </s>); this model takes at most "
                                       f"{self.max_tokens}", param=name)
            out.append(ids)
        return out

    def encode_batch(self, texts: list[str], param: str = "texts") -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, T), padding (B, T) True = <pad>), right-padded to the longest text."""
        rows = self.validate(texts, param)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return ids, ids == PAD

    def prompt(self, text: str) -> list[int]:
        """A caption's start: [bos] and the prompt's pieces (no eos: the caption continues it)."""
        return [BOS] + (self.pieces_ids(text) if text else [])

    def decode(self, ids: list[int]) -> str:
        """Pieces to text, special and out-of-vocabulary ids dropped (XLM-R's decode with
        skip_special_tokens: pieces joined, ▁ as a space, stripped)."""
        pieces = [self.sp.id_to_piece(i - OFFSET) for i in ids if UNK < i < self.mask_id]
        return "".join(pieces).replace("\u2581", " ").strip()
