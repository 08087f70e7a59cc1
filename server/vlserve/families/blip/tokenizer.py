"""BLIP's tokenizer: a BERT WordPiece tokenizer from the checkpoint's files, with `[DEC]`
as the decoder's BOS and `[SEP]` as its EOS, as BLIP does.

The first token of a text is `[CLS]`; the ITM / VQA question encoder uses `[ENC]` there in
BLIP's original code, `[CLS]` in transformers' classes (see BlipEngine.fusion_first_token).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ...errors import CheckpointError, InvalidInputError, TextTooLongError
from .config import TextConfig


class BlipTokenizer:
    def __init__(self, tokenizer: Tokenizer, text: TextConfig, *, ids_from_vocab: bool = False):
        """ids_from_vocab: take [SEP]/[PAD] from the vocabulary, as BLIP's original code does
        (HF layouts take them from config.json, as transformers does)."""
        self.tok = tokenizer
        self.max_length = text.max_position_embeddings
        self.pad_id = self._id("[PAD]", text.pad_token_id) if ids_from_vocab else text.pad_token_id
        self.sep_id = self._id("[SEP]", text.sep_token_id) if ids_from_vocab else text.sep_token_id  # decoder EOS
        self.cls_id = self._id("[CLS]", 101)
        self.dec_id = self._id("[DEC]", text.bos_token_id)
        # BLIP adds [DEC] then [ENC] to bert-base-uncased, so [ENC] follows [DEC]
        self.enc_id = self._id("[ENC]", self.dec_id + 1)
        self.tok.no_padding()
        self.tok.no_truncation()

    def _id(self, token: str, default: int) -> int:
        found = self.tok.token_to_id(token)
        return default if found is None else found

    @classmethod
    def from_folder(cls, folder: str | Path, text: TextConfig, *, ids_from_vocab: bool = False):
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), text, ids_from_vocab=ids_from_vocab)
        if (folder / "vocab.txt").is_file():
            from tokenizers.implementations import BertWordPieceTokenizer

            lower = True
            cfg = folder / "tokenizer_config.json"
            if cfg.is_file():
                lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
            wp = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)
            missing = [t for t in ("[DEC]", "[ENC]") if wp.token_to_id(t) is None]
            if missing:
                wp.add_special_tokens(missing)
            return cls(wp._tokenizer, text, ids_from_vocab=ids_from_vocab)
        raise CheckpointError(f"{folder}: no tokenizer.json or vocab.txt")

    def _ids(self, text: str, param: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text must be a non-empty string", param=param)
        ids = self.tok.encode(text).ids  # [CLS] ... [SEP]
        if len(ids) > self.max_length:
            raise TextTooLongError(
                f"text has {len(ids)} tokens; this model reads at most {self.max_length}", param=param)
        return ids

    def validate(self, texts: list[str], param: str = "texts") -> list[int]:
        """Raise the error encode_batch would, naming the item (before work is queued); else
        each text's token count."""
        return [len(self._ids(t, f"{param}[{i}]")) for i, t in enumerate(texts)]

    def encode_batch(self, texts: list[str], *, first_token: int | None = None, param: str = "texts"):
        """Right-padded (ids, attention_mask), both (B, L) long, mask 1 = token."""
        rows = [self._ids(t, f"{param}[{i}]") for i, t in enumerate(texts)]
        if first_token is not None:
            rows = [[first_token] + r[1:] for r in rows]
        return self.pad(rows)

    def pad(self, rows: list[list[int]]):
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids, mask

    def encode_prompt(self, prompt: str | None, param: str = "prompt") -> list[int]:
        """Decoder input: [DEC] + prompt tokens, without the closing [SEP]."""
        if not prompt:
            return [self.dec_id]
        if not isinstance(prompt, str):
            raise InvalidInputError("prompt must be a string", param=param)
        ids = self.tok.encode(prompt).ids
        return [self.dec_id] + ids[1:-1]

    def answer_ids(self, answer: str, param: str = "candidates") -> list[int]:
        """A candidate answer as the decoder reads it: [DEC] answer [SEP]."""
        return [self.dec_id] + self._ids(answer, param)[1:]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_tokenizer(words: list[str]) -> Tokenizer:
    """A lower-casing BERT WordPiece tokenizer over a closed vocabulary.

    Ids: [PAD] [UNK] [CLS] [SEP] [MASK], then `words` in order, then [DEC] [ENC] (as BLIP
    appends them to BERT's vocabulary). Used for small models trained here and in tests.
    """
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS])}
    for token in ("[DEC]", "[ENC]"):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS) + ["[DEC]", "[ENC]"])
    return tok
