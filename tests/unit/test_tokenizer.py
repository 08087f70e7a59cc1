"""Tokenizer behaviour and bad text."""

import pytest

from tests.helpers.tiny_blip import VOCAB
from vlserve.errors import InvalidInputError, TextTooLongError


def test_cls_text_sep(engine):
    ids, mask = engine.tokenizer.encode_batch(["Red dog", "the cat"])
    assert ids[0].tolist() == [VOCAB.index(t) for t in ("[CLS]", "red", "dog", "[SEP]")]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_first_token_replaced(engine):
    ids, _ = engine.tokenizer.encode_batch(["red dog"], first_token=engine.tokenizer.enc_id)
    assert ids[0, 0].item() == VOCAB.index("[ENC]")


def test_prompt_starts_with_dec_and_has_no_sep(engine):
    assert engine.tokenizer.encode_prompt("a picture of") == [VOCAB.index(t) for t in ("[DEC]", "a", "picture", "of")]
    assert engine.tokenizer.encode_prompt("") == [VOCAB.index("[DEC]")]


@pytest.mark.parametrize("text", ["", "   ", None, 5])
def test_empty_or_non_text_is_refused(engine, text):
    with pytest.raises(InvalidInputError):
        engine.tokenizer.encode_batch(["ok", text])


def test_text_over_the_position_limit_is_refused(engine):
    limit = engine.tokenizer.max_length
    with pytest.raises(TextTooLongError, match=f"at most {limit}") as err:
        engine.tokenizer.encode_batch(["red " * limit])
    assert err.value.param == "texts[0]"


def test_decode_skips_special_tokens(engine):
    ids = [VOCAB.index(t) for t in ("[DEC]", "red", "dog", "##s", "[SEP]")]
    assert engine.tokenizer.decode(ids) == "red dogs"
