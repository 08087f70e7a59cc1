"""`--pretty` tables: aligned columns, floats to 4 places, long vectors summarised; the client
SDK's copy of the helper renders exactly like the server's."""

from __future__ import annotations

import pytest

from vlserve import pretty
from vlserve_client import _pretty as client_pretty

CAPTIONS = [{"image": "a.png", "captions": [{"text": "a red square", "tokens": [5, 7], "logprob": -0.123456},
                                            {"text": "a square", "tokens": [5], "logprob": -2.5}]},
            {"image": "long-name.png", "captions": [{"text": "x", "tokens": list(range(12)), "logprob": -10.0}]}]
EMBED = {"model": "toy", "dim": 256, "image_embeddings": [[0.0123456] * 128 + [-0.0456] * 128]}
SCORE = {"itc": [0.91234, -0.07], "itm": [0.5, 1e-06], "texts": ["a red square", "a blue circle"]}
VQA = {"model": "toy", "answers": [{"text": "red", "tokens": [8], "logprob": -0.0006,
                                    "ranked": [{"text": "red", "prob": 0.99991}, {"text": "blue", "prob": 9e-05}]}]}
CAPFILT = {"model": "toy", "results": [[{"text": "a dog", "source": "web", "itm": 0.01, "kept": False}],
                                       [{"text": "a cat", "source": "synthetic", "itm": 0.9, "kept": True}]]}


def columns_line_up(text: str) -> bool:
    """Every line of a table breaks into cells where its header's dashes do."""
    lines = text.splitlines()
    dashes = next(i for i, line in enumerate(lines) if set(line) <= {"-", " "} and line)
    starts = [i for i, c in enumerate(lines[dashes]) if c == "-" and (i == 0 or lines[dashes][i - 1] == " ")]
    return all(line[s - 1] == " " for line in lines[dashes + 1:] for s in starts[1:] if len(line) > s)


def test_a_list_of_items_is_one_aligned_table_with_nested_rows():
    out = pretty.render(CAPTIONS)
    lines = out.splitlines()
    assert lines[0].split() == ["image", "text", "tokens", "logprob"] and len(lines) == 2 + 3
    assert "-0.1235" in lines[2] and "-2.5000" in lines[3] and "-10.0000" in lines[4]
    assert lines[3].startswith(" " * len("long-name.png"))  # the image named once, on its first caption
    assert "12 items [0, 1, ...]" in lines[4] and "[5, 7]" in lines[2]
    assert columns_line_up(out)
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1  # the dashes span the header


def test_embeddings_are_summarised_and_scalars_listed():
    out = pretty.render(EMBED)
    assert out.splitlines()[:2] == ["model  toy", "dim    256"]
    assert "dim 256 [0.0123, 0.0123, ...]" in out and "0.0456" not in out


def test_lists_of_one_length_read_side_by_side():
    lines = pretty.render(SCORE).splitlines()
    assert lines[0].split() == ["itc", "itm", "texts"]
    assert lines[2].split() == ["0.9123", "0.5000", "a", "red", "square"]
    assert lines[3].split()[:2] == ["-0.0700", "0.0000"]


def test_a_nested_answer_list_and_per_image_results():
    vqa = pretty.render(VQA)
    assert "ranked.text" in vqa and "0.9999" in vqa and "0.0001" in vqa
    capfilt = pretty.render(CAPFILT).splitlines()
    assert capfilt[0] == "model  toy" and capfilt[2] == "results:"
    assert capfilt[3].split() == ["#", "text", "source", "itm", "kept"]
    assert capfilt[5].split() == ["0", "a", "dog", "web", "0.0100", "false"]
    assert capfilt[6].split() == ["1", "a", "cat", "synthetic", "0.9000", "true"]


@pytest.mark.parametrize("value", [CAPTIONS, EMBED, SCORE, VQA, CAPFILT, {"live": True, "ready": False}, [], 3.0])
def test_the_client_copy_renders_the_same(value):
    assert client_pretty.render(value) == pretty.render(value)
