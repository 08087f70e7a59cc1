"""CoCa behind the gateway (issue 12), on tiny random models: what it advertises, the routes
that fit (caption, embeddings, ITC score and rank), the ones that do not (ITM, VQA) refused
by name, rank re-ranked by another family's ITM, CapFilt with a BLIP filter, and one vision
pass for a caption and its embedding. Parity with open_clip itself: tests/parity/."""

import base64
import json

import pytest
import torch

from tests.api.conftest import b64, png
from tests.helpers.tiny_coca import TINY, make_coca_folder
from vlserve.errors import CheckpointError
from vlserve.families.coca import config as coca_config
from vlserve.families.coca.engine import CocaEngine
from vlserve.families.coca.tokenizer import ClipTokenizer

pytestmark = pytest.mark.anyio


@pytest.fixture
def mixed_repo(three):
    return three  # blip, coca and beit3 (tests/api/conftest.py)


@pytest.fixture
def mixed(live3):
    return live3


def images(n):
    return [b64(png(((60 * i) % 256, (30 * i) % 256, 150), (40 + 3 * i, 30))) for i in range(n)]


async def test_coca_advertises_what_it_serves(mixed):
    models = {m["name"]: m for m in (await mixed.client.get("/v1/models")).json()["models"]}
    coca = models["coca"]
    assert coca["family"] == "coca" and coca["state"] == "ready"
    assert coca["tasks"] == ["caption", "embed", "score", "rank"]
    assert coca["capabilities"]["score_heads"] == ["itc"] and coca["capabilities"]["vqa_modes"] == []
    assert coca["capabilities"]["embedding_dim"] == 32 and coca["capabilities"]["max_text_tokens"] == 16
    assert coca["graphs"] == ["vision", "text", "decoder"]


async def test_caption_with_the_embedding_of_the_same_vision_pass(mixed):
    imgs = images(3)
    r = await mixed.client.post("/v1/caption", json={"model": "coca", "images": imgs, "max_new_tokens": 6,
                                                     "return_embeddings": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["captions"]) == 3 and len(body["image_embeddings"]) == 3
    emb = (await mixed.client.post("/v1/embeddings", json={"model": "coca", "images": imgs})).json()
    torch.testing.assert_close(torch.tensor(body["image_embeddings"]), torch.tensor(emb["image_embeddings"]),
                               atol=1e-6, rtol=0)
    plain = (await mixed.client.post("/v1/caption", json={"model": "coca", "images": imgs[:1]})).json()
    assert "image_embeddings" not in plain


async def test_beams_samples_and_penalties_on_coca(mixed):
    base = {"model": "coca", "images": images(2), "max_new_tokens": 6}
    for extra in ({"num_beams": 3, "num_captions": 2}, {"do_sample": True, "seed": 1, "num_captions": 3},
                  {"repetition_penalty": 1.5, "min_new_tokens": 4}):
        r = await mixed.client.post("/v1/caption", json=base | extra)
        assert r.status_code == 200, (extra, r.text)
        assert all(len(cs) == extra.get("num_captions", 1) for cs in r.json()["captions"])


async def test_itc_score_and_the_refusals(mixed):
    r = await mixed.client.post("/v1/retrieval/score", json={"model": "coca", "images": images(2),
                                                             "texts": ["a red dog", "two cats"]})
    assert r.status_code == 200 and len(r.json()["itc"]) == 2
    r = await mixed.client.post("/v1/retrieval/score", json={"model": "coca", "images": images(1), "texts": ["a"],
                                                             "heads": ["itm"]})
    assert r.status_code == 400 and "no itm head" in r.json()["error"]["message"]
    r = await mixed.client.post("/v1/vqa", json={"model": "coca", "images": images(1), "questions": ["what?"]})
    assert r.status_code == 400 and "does not serve 'vqa'" in r.json()["error"]["message"]


async def test_rank_by_itc_then_reranked_by_blips_itm(mixed):
    texts = ["a red dog", "two cats", "a blue square", "yes", "green"]
    body = {"model": "coca", "query_image": images(1)[0], "candidate_texts": texts, "k_itc": 3, "top_k": 3}
    alone = (await mixed.client.post("/v1/retrieval/rank", json=body)).json()["results"]
    assert all(x["itm"] is None for x in alone)
    r = await mixed.client.post("/v1/retrieval/rank", json=body | {"reranker": "blip"})
    assert r.status_code == 200, r.text
    assert {x["index"] for x in r.json()["results"]} == {x["index"] for x in alone}
    assert all(x["itm"] is not None for x in r.json()["results"])


async def test_capfilt_with_coca_captions_and_a_blip_filter(mixed):
    body = {"images": images(2), "texts": [["a red dog"], []], "num_synthetic": 2, "seed": 0, "max_new_tokens": 5,
            "captioner": "coca", "filter": "blip"}
    r = await mixed.client.post("/v1/capfilt", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0][0]["source"] == "web" and all(0 <= c["itm"] <= 1 for per in results for c in per)
    r = await mixed.client.post("/v1/capfilt", json=body | {"filter": "coca"})  # CoCa alone has no filter
    assert r.status_code == 400 and "does not serve 'capfilt'" in r.json()["error"]["message"]
    r = await mixed.client.post("/v1/capfilt", json=body | {"captioner": "blip", "filter": "coca"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "filter"


def test_tokenizer_round_trip_and_limits():
    tok = ClipTokenizer(16)
    ids = tok.encode_batch(["A small red square left of a large blue circle"])
    assert ids[0, 0] == tok.sot_id and tok.eot_id in ids[0].tolist() and ids.shape == (1, 16)
    real = [i for i in ids[0].tolist() if i not in (0,)]
    assert tok.decode(real) == "a small red square left of a large blue circle"
    with pytest.raises(Exception, match="at most 16"):
        tok.encode_batch(["word " * 20])


def test_loader_names_what_does_not_fit(tmp_path):
    folder = make_coca_folder(tmp_path / "m")
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "open_clip_model.safetensors")
    del state["text.cls_emb"]
    save_file(state, folder / "open_clip_model.safetensors")
    with pytest.raises(CheckpointError, match="missing key.*text.cls_emb"):
        CocaEngine(folder)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "roberta-base"
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="hf_model_name"):
        CocaEngine(folder)


def test_a_bare_checkpoint_named_in_model_toml(tmp_path, monkeypatch):
    folder = make_coca_folder(tmp_path / "bare")
    weights = (folder / "open_clip_model.safetensors")
    from safetensors.torch import load_file

    torch.save({"state_dict": {f"module.{k}": v for k, v in load_file(weights).items()}}, folder / "epoch_3.pt")
    weights.unlink()
    (folder / "open_clip_config.json").unlink()
    monkeypatch.setitem(coca_config.ARCHITECTURES, "coca_tiny", TINY)
    with pytest.raises(CheckpointError, match="name the architecture"):
        CocaEngine(folder)
    (folder / "model.toml").write_text('family = "coca"\n[coca]\narchitecture = "coca_tiny"\n')
    from vlserve import load_model

    model = load_model(folder)
    assert model.tasks == ("caption", "embed", "score", "rank")
    assert len(model.caption([base64.b64decode(images(1)[0])], max_new_tokens=3)) == 1


def test_python_score_defaults_to_the_heads_the_model_has(mixed_repo):
    from vlserve import load_model

    image = base64.b64decode(images(1)[0])
    coca = load_model(mixed_repo / "coca").score([image], ["a", "b c"])
    blip = load_model(mixed_repo / "blip").score([image], ["a", "b c"])
    assert set(coca) == {"itc"} and set(blip) == {"itc", "itm"}
    assert coca["itc"].shape == blip["itm"].shape == (1, 2)
