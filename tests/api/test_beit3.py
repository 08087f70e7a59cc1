"""BEiT-3 behind the gateway (issue 13), on tiny random models: what it advertises, VQA by its
classifier (probabilities, top-k), captions with every decoding option, ITC retrieval, the
tasks a checkpoint lacks refused by name, CapFilt with BEiT-3 captions and a BLIP filter,
and the loader's errors. Parity with torchscale and unilm themselves: tests/parity/."""

import dataclasses
import json

import pytest
import torch

from tests.api.conftest import Live, b64, png
from tests.helpers.own_blip import make_folder
from tests.helpers.tiny_beit3 import ANSWERS, TINY, make_beit3_folder, train_spm
from vlserve.errors import CheckpointError, TextTooLongError
from vlserve.families.beit3.engine import Beit3Engine, Beit3Options
from vlserve.families.beit3.loader import ANSWERS as ANSWER_FILE
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
OPTS = Beit3Options(heads=TINY.heads)


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm") / "beit3.spm")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, spm):
    root = tmp_path_factory.mktemp("beit3-repo")
    make_beit3_folder(root / "beit3", spm=spm)
    make_beit3_folder(root / "beit3-retrieval", seed=1, spm=spm,
                      cfg=dataclasses.replace(TINY, answers=0, caption=False))
    make_beit3_folder(root / "beit3-vqa", seed=2, spm=spm, cfg=dataclasses.replace(TINY, retrieval=False, caption=False,
                                                                                   normalize_output=False))
    make_folder(root / "blip")
    return root


@pytest.fixture
async def live(repo):
    async with Live(Settings(model_repo=repo)) as live:
        yield live


def images(n):
    return [b64(png(((60 * i) % 256, (30 * i) % 256, 150), (40 + 3 * i, 30))) for i in range(n)]


async def test_what_each_checkpoint_advertises(live):
    models = {m["name"]: m for m in (await live.client.get("/v1/models")).json()["models"]}
    full, retrieval, vqa = models["beit3"], models["beit3-retrieval"], models["beit3-vqa"]
    assert full["family"] == "beit3" and full["state"] == "ready", full
    assert full["tasks"] == ["caption", "embed", "score", "rank", "vqa"]
    caps = full["capabilities"]
    assert caps["vqa_modes"] == ["classify"] and caps["answer_count"] == len(ANSWERS)
    assert caps["answers"] == list(ANSWERS) and caps["score_heads"] == ["itc"] and caps["embedding_dim"] == 32
    assert full["graphs"] == ["vision", "text", "fusion", "decoder"]
    assert full["details"]["heads"] == ["retrieval", "vqa", "captioning"]
    assert retrieval["tasks"] == ["embed", "score", "rank"] and vqa["tasks"] == ["vqa"]


async def test_vqa_classifies_with_probabilities_and_top_k(live):
    body = {"model": "beit3", "images": images(3), "questions": ["what color is it?", "how many?", "is it red?"]}
    r = await live.client.post("/v1/vqa", json=body)
    assert r.status_code == 200, r.text
    for a in r.json()["answers"]:
        probs = [x["prob"] for x in a["ranked"]]
        assert len(probs) == len(ANSWERS) and probs == sorted(probs, reverse=True)
        assert all(0 < p < 1 for p in probs) and a["text"] == a["ranked"][0]["text"]
        assert a["logprob"] == pytest.approx(torch.tensor(probs[0]).log().item(), abs=1e-5)
    top = (await live.client.post("/v1/vqa", json=body | {"top_k": 2, "mode": "classify"})).json()["answers"]
    assert [a["ranked"] for a in top] == [a["ranked"][:2] for a in r.json()["answers"]]
    r = await live.client.post("/v1/vqa", json=body | {"candidates": ["red", "blue"]})
    assert r.status_code == 400 and "cannot answer by 'rank'" in r.json()["error"]["message"]
    r = await live.client.post("/v1/vqa", json=body | {"mode": "generate"})
    assert r.status_code == 400 and "its VQA modes: classify" in r.json()["error"]["message"]


async def test_captions_with_every_decoding_option(live):
    base = {"model": "beit3", "images": images(2), "max_new_tokens": 6}
    for extra in ({}, {"num_beams": 3, "num_captions": 2}, {"do_sample": True, "seed": 1, "num_captions": 3},
                  {"repetition_penalty": 1.5, "min_new_tokens": 4}, {"num_beams": 2, "length_penalty": 0.5},
                  {"do_sample": True, "top_p": 0.9, "top_k": 5, "temperature": 0.7, "seed": 3},
                  {"prompt": "a small"}):
        r = await live.client.post("/v1/caption", json=base | extra)
        assert r.status_code == 200, (extra, r.text)
        captions = r.json()["captions"]
        assert all(len(cs) == extra.get("num_captions", 1) for cs in captions)
        if "min_new_tokens" in extra:
            assert all(len(c["tokens"]) >= 4 for cs in captions for c in cs)
    same = [(await live.client.post("/v1/caption", json=base | {"do_sample": True, "seed": 7})).json()["captions"]
            for _ in range(2)]
    assert same[0] == same[1]
    r = await live.client.post("/v1/caption", json=base | {"return_embeddings": True})
    emb = (await live.client.post("/v1/embeddings", json={"model": "beit3", "images": base["images"]})).json()
    torch.testing.assert_close(torch.tensor(r.json()["image_embeddings"]), torch.tensor(emb["image_embeddings"]),
                               atol=1e-5, rtol=0)


async def test_retrieval_by_itc_and_the_refusals(live):
    texts = ["a red dog", "two cats", "a blue square"]
    r = await live.client.post("/v1/retrieval/score", json={"model": "beit3-retrieval", "images": images(2),
                                                            "texts": texts})
    assert r.status_code == 200 and torch.tensor(r.json()["itc"]).shape == (2, 3)
    r = await live.client.post("/v1/retrieval/score", json={"model": "beit3", "images": images(1), "texts": texts,
                                                            "heads": ["itm"]})
    assert r.status_code == 400 and "no itm head" in r.json()["error"]["message"]
    r = await live.client.post("/v1/retrieval/rank", json={"model": "beit3", "query_text": "a red dog",
                                                           "candidate_images": images(4), "top_k": 2})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    for model, task, route, body in (
            ("beit3-retrieval", "caption", "/v1/caption", {"images": images(1)}),
            ("beit3-retrieval", "vqa", "/v1/vqa", {"images": images(1), "questions": ["what?"]}),
            ("beit3-vqa", "embed", "/v1/embeddings", {"texts": ["a"]}),
            ("beit3-vqa", "caption", "/v1/caption", {"images": images(1)})):
        r = await live.client.post(route, json={"model": model} | body)
        assert r.status_code == 400, (model, route, r.text)
        message = r.json()["error"]["message"]
        assert f"does not serve '{task}'" in message and "it serves:" in message


async def test_capfilt_with_beit3_captions_and_a_blip_filter(live):
    body = {"images": images(2), "texts": [["a red dog"], []], "num_synthetic": 2, "seed": 0, "max_new_tokens": 5,
            "captioner": "beit3", "filter": "blip"}
    r = await live.client.post("/v1/capfilt", json=body)
    assert r.status_code == 200, r.text
    assert all(0 <= c["itm"] <= 1 for per in r.json()["results"] for c in per)
    r = await live.client.post("/v1/capfilt", json=body | {"filter": "beit3"})  # no match head
    assert r.status_code == 400 and "does not serve 'capfilt'" in r.json()["error"]["message"]


async def test_bad_inputs(live):
    r = await live.client.post("/v1/vqa", json={"model": "beit3", "images": images(1), "questions": ["word " * 60]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "text_too_long"
    assert r.json()["error"]["param"] == "questions[0]"
    r = await live.client.post("/v1/vqa", json={"model": "beit3", "images": images(2), "questions": ["a", " "]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "questions[1]"
    r = await live.client.post("/v1/vqa", json={"model": "beit3", "images": images(2), "questions": ["a"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "questions"
    r = await live.client.post("/v1/embeddings", json={"model": "beit3", "images": [b64(b"not an image")]})
    assert r.status_code == 415
    r = await live.client.post("/v1/vqa", json={"model": "beit3", "images": images(1), "questions": ["a"],
                                                "top_k": 0})
    assert r.status_code == 422
    r = await live.client.post("/v1/caption", json={"model": "beit3", "images": images(1), "max_new_tokens": 40})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_new_tokens"


def test_tokenizer_limits_and_special_strings(tmp_path, spm):
    folder = make_beit3_folder(tmp_path / "m", spm=spm)
    eng = Beit3Engine(folder, beit3=OPTS)
    ids = eng.tokenizer.ids("a small red square <mask> </s>")
    assert ids[0] == 0 and ids[-1] == 2 and eng.tokenizer.mask_id not in ids and 2 not in ids[1:-1]
    assert 3 in ids  # characters the tiny vocabulary lacks are <unk>, which decoding drops
    assert eng.decode_text(ids).startswith("a small red square ")
    with pytest.raises(TextTooLongError, match="at most 38"):
        eng.check_texts(["word " * 40])


def test_loader_errors_name_the_problem(tmp_path, spm):
    folder = make_beit3_folder(tmp_path / "m", spm=spm)
    with pytest.raises(CheckpointError, match="set \\[beit3\\] heads"):
        Beit3Engine(folder)
    (folder / ANSWER_FILE).write_text(json.dumps({"answer": "yes", "label": 0}) + "\n")
    with pytest.raises(CheckpointError, match="1 answers for a VQA head of 5"):
        Beit3Engine(folder, beit3=OPTS)
    (folder / ANSWER_FILE).unlink()
    with pytest.raises(CheckpointError, match="no answer2label.txt"):
        Beit3Engine(folder, beit3=OPTS)

    other = make_beit3_folder(tmp_path / "n", spm=spm)
    (other / "beit3.spm").unlink()
    with pytest.raises(CheckpointError, match="no beit3.spm"):
        Beit3Engine(other, beit3=OPTS)

    third = make_beit3_folder(tmp_path / "o", spm=spm)
    state = torch.load(third / "beit3.pth", weights_only=True)["model"]
    del state["beit3.encoder.layers.1.ffn.B.fc2.weight"]
    torch.save({"module": state}, third / "beit3.pth")  # unilm's DDP key
    with pytest.raises(CheckpointError, match="missing key.*layers.1.ffn.B.fc2.weight"):
        Beit3Engine(third, beit3=OPTS)
    torch.save({"model": {"visual_encoder.x": torch.zeros(1)}}, third / "beit3.pth")
    with pytest.raises(CheckpointError, match="not a BEiT-3 checkpoint"):
        Beit3Engine(third, beit3=OPTS)


def test_sizes_come_from_the_weights_and_the_family_is_sniffed(tmp_path, spm):
    cfg = dataclasses.replace(TINY, image_size=40, text_positions=20, layers=3)
    folder = make_beit3_folder(tmp_path / "sized", spm=spm, cfg=cfg)
    (folder / "model.toml").write_text("[beit3]\nheads = 4\n")  # no family: the registry sniffs it
    from vlserve import load_model

    model = load_model(folder)
    assert model.engine.family == "beit3"
    c = model.engine.model.config
    assert (c.image_size, c.layers, c.text_positions, c.patch_size) == (40, 3, 20, 8)
    assert model.capabilities.max_text_tokens == 18 and model.capabilities.image_size == 40
    assert len(model.caption([png((10, 200, 30), (50, 70))], max_new_tokens=3)[0]) == 1
