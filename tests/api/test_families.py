"""The family seam as a repository sees it (issue 11): folders find their family by what
their files say, unclaimed folders are listed with the reason, the HF hub cache layout is
served, capabilities are advertised, model.toml's family table and its legacy keys."""

import json
import shutil

import pytest

from tests.api.conftest import Live, b64, png
from tests.helpers.own_blip import make_folder
from vlserve.repository import registry
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio


def models_of(body) -> dict:
    return {m["name"]: m for m in body["models"]}


@pytest.fixture(scope="module")
def family_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    make_folder(root / "plain")  # no model.toml: sniffed
    hub = root / "models--Salesforce--blip-tiny"
    make_folder(hub / "snapshots" / "abc123", seed=2)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    (hub / "blobs").mkdir()
    clip = make_folder(root / "clip", seed=3)
    cfg = json.loads((clip / "config.json").read_text())
    (clip / "config.json").write_text(json.dumps(cfg | {"model_type": "clip", "architectures": ["CLIPModel"]}))
    labelled = make_folder(root / "labelled", seed=4)
    (labelled / "config.json").write_text(json.dumps(
        json.loads((labelled / "config.json").read_text()) | {"architectures": ["CLIPModel"]}))
    (root / "scenes").mkdir()  # not a model at all
    (root / "scenes" / "a.png").write_bytes(png())
    legacy = make_folder(root / "legacy", seed=5)
    (legacy / "model.toml").write_text('prompt = "a picture of "\nfusion_first_token = "[ENC]"\n')
    table = make_folder(root / "table", seed=6)
    (table / "model.toml").write_text('family = "blip"\n[blip]\nprompt = "a photo of "\ncross_attention = "cached"\n')
    wrong = make_folder(root / "wrong-table", seed=7)
    (wrong / "model.toml").write_text('[blip]\nno_such_key = 1\n')
    # transformers 5 writes the image processor into processor_config.json
    t5 = make_folder(root / "t5", seed=8)
    pre = json.loads((t5 / "preprocessor_config.json").read_text())
    (t5 / "processor_config.json").write_text(json.dumps({"image_processor": pre, "processor_class": "BlipProcessor"}))
    (t5 / "preprocessor_config.json").unlink()
    return root


@pytest.fixture
async def family_live(family_repo):
    async with Live(Settings(model_repo=family_repo)) as live:
        yield live


async def test_folders_find_their_family_or_say_why_not(family_live, family_repo):
    models = models_of((await family_live.client.get("/v1/models")).json())
    assert models["plain"]["state"] == "ready" and models["plain"]["family"] == "blip"
    assert models["Salesforce/blip-tiny"]["state"] == "ready"  # the hub cache layout, by its repo id
    assert models["clip"]["state"] == "skipped" and "model_type 'clip'" in models["clip"]["error"]
    assert models["labelled"]["state"] == "skipped" and "CLIPModel" in models["labelled"]["error"]
    assert models["scenes"]["state"] == "skipped" and "no config.json" in models["scenes"]["error"]
    assert str(family_repo) not in json.dumps(models)
    r = await family_live.client.post("/v1/embeddings", json={"model": "Salesforce/blip-tiny", "texts": ["a"]})
    assert r.status_code == 200
    r = await family_live.client.post("/v1/embeddings", json={"model": "clip", "texts": ["a"]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "model_failed"


async def test_skipped_folders_do_not_count_for_strict_readiness(tmp_path):
    make_folder(tmp_path / "only")
    (tmp_path / "notes").mkdir()
    async with Live(Settings(model_repo=tmp_path, strict_readiness=True)) as live:
        assert (await live.client.get("/health/ready")).status_code == 200


async def test_family_table_and_legacy_keys(family_live):
    models = models_of((await family_live.client.get("/v1/models")).json())
    legacy, table = models["legacy"], models["table"]
    assert legacy["state"] == "ready" and len(legacy["warnings"]) == 2
    assert all("[blip]" in w for w in legacy["warnings"])
    assert legacy["details"]["fusion_first_token"] == "[ENC]" and legacy["details"]["default_prompt"] == "a picture of "
    assert table["warnings"] == [] and table["details"]["cross_attention"] == "cached"
    assert table["details"]["default_prompt"] == "a photo of "
    wrong = models["wrong-table"]
    assert wrong["state"] == "failed" and "blip.no_such_key" in wrong["error"]


async def test_processor_config_of_transformers_5_is_read(family_live):
    models = models_of((await family_live.client.get("/v1/models")).json())
    assert models["t5"]["state"] == "ready" and models["t5"]["capabilities"]["image_size"] == 32
    a = await family_live.client.post("/v1/embeddings", json={"model": "t5", "images": [b64(png())]})
    assert a.status_code == 200


async def test_capabilities_are_advertised(live):
    models = models_of((await live.client.get("/v1/models")).json())
    toy, cap = models["toy"], models["cap"]
    assert toy["tasks"] == ["caption", "embed", "score", "rank", "vqa", "capfilt"]
    assert toy["capabilities"] == {"score_heads": ["itc", "itm"], "vqa_modes": ["generate", "rank"],
                                   "embedding_dim": 16, "max_text_tokens": 48, "image_size": 32,
                                   "answers": ["red", "blue", "yes"], "answer_count": 3}
    assert cap["tasks"] == ["caption"]  # model.toml narrows what the weights serve
    r = await live.client.post("/v1/vqa", json={"model": "cap", "images": [b64(png())], "questions": ["q"]})
    assert r.status_code == 400 and "it serves: caption" in r.json()["error"]["message"]


def test_the_registry_imports_a_family_only_when_asked():
    assert registry.names() == ("blip", "coca", "beit3")
    with pytest.raises(Exception, match="unknown family 'albef'"):
        registry.family("albef")


def test_an_empty_hub_cache_folder_is_reported(tmp_path):
    (tmp_path / "models--org--name" / "snapshots").mkdir(parents=True)
    from vlserve.repository.repository import ModelRepository

    repo = ModelRepository(Settings(model_repo=tmp_path), metrics=None)
    assert repo.models["org/name"].state == "skipped" and "without snapshots" in repo.models["org/name"].error
    shutil.rmtree(tmp_path / "models--org--name")


async def test_the_default_model_answers_requests_that_name_none(tmp_path):
    make_folder(tmp_path / "first")
    make_folder(tmp_path / "second", seed=3)
    (tmp_path / "second" / "model.toml").write_text("default = true\n")
    async with Live(Settings(model_repo=tmp_path)) as live:
        r = await live.client.post("/v1/embeddings", json={"texts": ["a red dog"]})
        assert r.status_code == 200 and r.json()["model"] == "second"
        r = await live.client.post("/v1/embeddings", json={"texts": ["a red dog"], "model": "first"})
        assert r.json()["model"] == "first"
        listed = (await live.client.get("/v1/models")).json()["models"]
        assert {m["name"]: m["default"] for m in listed} == {"first": False, "second": True}  # the playground's pick
