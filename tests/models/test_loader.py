"""Checkpoint loading: layouts and the tasks they serve, key errors, the original .pth layout."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.tiny_blip import VOCAB, randomize
from tests.helpers.tasks import task_model
from vlserve.families.blip.engine import BlipEngine, BlipOptions, EngineOptions
from vlserve.tasks.models import require
from vlserve.families.blip.loader import original_state_dict
from vlserve.errors import CheckpointError, UnsupportedTaskError
from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig
from vlserve.families.blip.model import Blip, Components


@pytest.mark.parametrize("layout,tasks", [
    ("caption", {"caption"}),
    ("retrieval", {"embed", "score", "rank"}),
    ("vqa", {"vqa"}),
    ("union", {"caption", "embed", "score", "rank", "vqa", "capfilt"}),
])
def test_layout_serves_exactly_its_tasks(tiny_pow2, layout, tasks):
    eng = BlipEngine(tiny_pow2.folders[layout], EngineOptions())
    assert set(eng.capabilities.tasks) == tasks
    model = task_model(eng)
    for task in {"caption", "embed", "score", "rank", "vqa", "capfilt"} - tasks:
        with pytest.raises(UnsupportedTaskError, match="it serves"):
            require(model, task)


def copy_folder(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_key_is_named(tiny_pow2, tmp_path):
    folder = copy_folder(tiny_pow2.folders["retrieval"], tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    del state["text_encoder.encoder.layer.1.output.dense.weight"]
    save_file(state, folder / "model.safetensors")
    missing = r"missing key\(s\): text_encoder\.encoder\.layer\.1\.output\.dense\.weight"
    with pytest.raises(CheckpointError, match=missing):
        BlipEngine(folder)


def test_unexpected_key_is_named(tiny_pow2, tmp_path):
    folder = copy_folder(tiny_pow2.folders["caption"], tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    state["text_decoder.bert.extra_head.weight"] = torch.zeros(2)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): text_decoder\.bert\.extra_head\.weight"):
        BlipEngine(folder)


def test_config_disagreeing_with_weights(tiny_pow2, tmp_path):
    folder = copy_folder(tiny_pow2.folders["caption"], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit config.json"):
        BlipEngine(folder)


def test_no_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no weights found"):
        BlipEngine(tmp_path)


def test_pytorch_bin_layout(tiny_pow2, tmp_path):
    hf = tiny_pow2.hf["caption"]
    hf.save_pretrained(tmp_path, safe_serialization=False)
    shutil.copy(tiny_pow2.folders["caption"] / "tokenizer.json", tmp_path)
    eng = BlipEngine(tmp_path)
    px = tiny_pow2.pixels(2)
    with torch.no_grad():
        ref = hf.vision_model(pixel_values=px).last_hidden_state
    torch.testing.assert_close(eng.encode_images(px), ref, atol=1e-4, rtol=0)


def original_config() -> BlipConfig:
    # widths of 64 per head, as the original checkpoints have (heads are then inferred from widths)
    vision = VisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
                          image_size=48, patch_size=16, layer_norm_eps=1e-6)
    text = TextConfig(vocab_size=len(VOCAB), hidden_size=64, encoder_hidden_size=64, intermediate_size=80,
                      num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=40)
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=32)


def test_original_pth_round_trip(tmp_path):
    config = original_config()
    model = Blip(config, Components(True, True, True, True, True, ("answer", "caption")))
    randomize(model, seed=3)
    model.text_decoder.tie_weights()
    state = original_state_dict(model)
    # training-only state the loader must drop
    state.update({"visual_encoder_m.cls_token": torch.zeros(1), "text_encoder_m.embeddings.word_embeddings.weight":
                  torch.zeros(1), "vision_proj_m.weight": torch.zeros(1), "image_queue": torch.zeros(4, 2),
                  "text_queue": torch.zeros(4, 2), "idx_queue": torch.zeros(4), "ptr_queue": torch.zeros(1),
                  "temp": torch.tensor(0.07), "text_encoder.embeddings.position_ids": torch.arange(40)[None]})
    torch.save({"model": state}, tmp_path / "model_base_retrieval_coco.pth")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB[:-2]) + "\n")  # bert vocab; BLIP adds [DEC], [ENC]
    (tmp_path / "med_config.json").write_text(json.dumps({"num_attention_heads": 2}))

    eng = BlipEngine(tmp_path)
    assert eng.origin == "original"
    assert eng.model.config == config  # sizes inferred from tensors, eps 1e-6 for the ViT
    assert eng.fusion_first_token == "[ENC]" and eng.tokenizer.enc_id == VOCAB.index("[ENC]")
    assert eng.tokenizer.dec_id == VOCAB.index("[DEC]") and eng.tokenizer.sep_id == VOCAB.index("[SEP]")
    assert eng.default_prompt == "a picture of "
    # a pretraining-style checkpoint (retrieval heads beside the decoder): the decoder captions
    assert set(eng.capabilities.tasks) == {"caption", "embed", "score", "rank", "capfilt"}
    ours = eng.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(ours[key], value), key
    px = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(eng.encode_images(px), model.eval().encode_images(px))


def test_fusion_first_token_override(tiny_pow2):
    eng = BlipEngine(tiny_pow2.folders["retrieval"], EngineOptions(), BlipOptions(fusion_first_token="[ENC]"))
    px = tiny_pow2.pixels(1)
    states = eng.encode_images(px)
    enc = eng.match(states, ["red dog"])
    cls = BlipEngine(tiny_pow2.folders["retrieval"]).match(states, ["red dog"])
    assert not torch.allclose(enc, cls)  # the first token does matter to ITM
