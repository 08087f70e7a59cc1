"""`vlserve merge`: one folder from a captioning and a retrieval checkpoint serves every task
of both with the same numbers (CapFilt included); different weights for one part are
refused unless the first folder's are preferred, and then reported."""

import json

import pytest
import torch

from tests.helpers.tasks import task_model
from vlserve.cli import main
from vlserve.errors import InvalidInputError
from vlserve.families.blip.engine import BlipEngine
from vlserve.families.blip.merge import merge
from vlserve.tasks.capfilt import capfilt
from vlserve.tasks.caption import caption
from vlserve.engine.generation.params import GenerationParams

TEXTS = ["red dog", "a picture of the cat", "two small blue circles"]


def test_caption_and_retrieval_merge_into_one_folder_serving_both(tiny_pow2, tmp_path):
    import asyncio

    out = tmp_path / "merged"
    report = merge(out, [tiny_pow2.folders["caption"], tiny_pow2.folders["retrieval"]])
    assert report["conflicts"] == [] and report["decoder_roles"] == ["caption"]
    merged, cap, ret = (BlipEngine(f) for f in (out, tiny_pow2.folders["caption"], tiny_pow2.folders["retrieval"]))
    assert merged.capabilities.tasks == ("caption", "embed", "score", "rank", "capfilt")
    px = tiny_pow2.pixels(2, seed=9)
    params = GenerationParams(max_new_tokens=8, num_beams=2)
    want = asyncio.run(caption(task_model(cap), px, params=params))
    got = asyncio.run(caption(task_model(merged), px, params=params))
    assert [[c.tokens for c in cs] for cs in got] == [[c.tokens for c in cs] for cs in want]
    states = merged.encode_images(px)
    torch.testing.assert_close(merged.match(states[:1].expand(3, -1, -1), TEXTS),
                               ret.match(ret.encode_images(px)[:1].expand(3, -1, -1), TEXTS), atol=1e-5, rtol=0)
    torch.testing.assert_close(merged.text_embeddings(TEXTS), ret.text_embeddings(TEXTS), atol=1e-5, rtol=0)
    out_capfilt = asyncio.run(capfilt(task_model(merged), px, [TEXTS, []], num_synthetic=1,
                                      params=GenerationParams(do_sample=True, seed=0, max_new_tokens=5)))
    assert [c.source for c in out_capfilt[0]][:3] == ["web"] * 3


def test_different_weights_for_one_part_are_refused_then_reported(tiny_pow2, tmp_path):
    folders = [tiny_pow2.folders[k] for k in ("caption", "retrieval", "vqa")]
    with pytest.raises(InvalidInputError, match="text_decoder.*text_encoder|text_encoder.*text_decoder"):
        merge(tmp_path / "refused", folders)
    assert not (tmp_path / "refused").exists()
    report = merge(tmp_path / "kept", folders, prefer_first=True)
    parts = {c["part"]: c for c in report["conflicts"]}
    assert set(parts) == {"text_encoder", "text_decoder"} and all(c["max_abs_diff"] > 0 for c in parts.values())
    assert parts["text_decoder"]["kept"] == str(folders[0]) and parts["text_decoder"]["dropped"] == [str(folders[2])]
    assert report["decoder_roles"] == ["caption"]  # the VQA answer decoder was dropped, so is its role
    assert "vqa" not in BlipEngine(tmp_path / "kept").capabilities.tasks


def test_the_command(tiny_pow2, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["merge", str(out), str(tiny_pow2.folders["caption"]), str(tiny_pow2.folders["retrieval"])])
    assert code == 0 and json.loads(capsys.readouterr().out)["out"] == str(out)
    assert (out / "merge.json").is_file() and (out / "tokenizer.json").is_file()
    code = main(["merge", str(out), str(tiny_pow2.folders["caption"]), str(tiny_pow2.folders["retrieval"])])
    assert code == 2 and "exists" in capsys.readouterr().err
