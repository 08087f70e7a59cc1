"""model.toml `precision` through the server: /v1/models says what runs in int8 (BLIP by
graph, CoCa with its text tower shared by the decoder), and the model serves."""

from __future__ import annotations

import pytest

from tests.api.conftest import Live, b64, png
from tests.helpers.own_blip import make_folder
from tests.helpers.tiny_coca import make_coca_folder
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
IMG = b64(png())


async def test_int8_runtimes_are_listed_and_served(tmp_path):
    make_folder(tmp_path / "toy")
    (tmp_path / "toy" / "model.toml").write_text('precision = "int8"\nint8_graphs = ["text", "decoder"]\n')
    make_coca_folder(tmp_path / "coca")
    (tmp_path / "coca" / "model.toml").write_text('precision = "int8"\n')
    async with Live(Settings(model_repo=tmp_path)) as live:
        models = {m["name"]: m for m in (await live.client.get("/v1/models")).json()["models"]}
        assert models["toy"]["runtimes"] == {"vision": "torch", "text": "torch-int8", "fusion": "torch-int8",
                                             "decoder": "torch-int8"}
        r = await live.client.post("/v1/caption", json={"model": "toy", "images": [IMG], "max_new_tokens": 4})
        assert r.status_code == 200, r.text
        assert models["coca"]["runtimes"] == {"vision": "torch-int8", "text": "torch-int8", "decoder": "torch-int8"}
