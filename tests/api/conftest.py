"""An app over a temporary model repository of tiny random models, run in-process."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import pytest
from PIL import Image

from tests.helpers.own_blip import make_folder
from tests.helpers.tiny_beit3 import make_beit3_folder
from tests.helpers.tiny_coca import make_coca_folder
from vlserve.api.app import create_app
from vlserve.settings import Settings


@pytest.fixture
def anyio_backend():
    return "asyncio"


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """toy: every task; cap: caption only (model.toml narrows it); broken: fails to load."""
    root = tmp_path_factory.mktemp("repo")
    make_folder(root / "toy")
    (root / "toy" / "model.toml").write_text(
        'name = "toy"\n[generation.caption]\nmax_new_tokens = 8\n[vqa]\nanswers = ["red", "blue", "yes"]\n')
    make_folder(root / "cap", seed=1)
    (root / "cap" / "model.toml").write_text('tasks = ["caption"]\n[batching]\nmax_queue_delay_ms = 20\n')
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text(json.dumps({"text_config": {}, "vision_config": {}}))
    return root


class Live:
    """An app with its lifespan running and an httpx client on it."""

    def __init__(self, settings: Settings):
        self.app = create_app(settings)
        self.gateway = self.app.state.gateway
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                                        base_url="http://test",
                                        timeout=60)
        self._lifespan = self.app.router.lifespan_context(self.app)

    async def __aenter__(self):
        await self._lifespan.__aenter__()
        for _ in range(600):
            if (await self.client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self._lifespan.__aexit__(*exc)


@pytest.fixture
def settings(repo):
    return Settings(model_repo=repo, max_images=4, max_body_bytes=2_000_000, max_texts=8)


@pytest.fixture
async def live(settings):
    async with Live(settings) as live:
        yield live


@pytest.fixture(scope="session")
def three(tmp_path_factory):
    """One tiny random model of each family (blip, coca, beit3): the protocol fronts' tests."""
    root = tmp_path_factory.mktemp("three")
    make_folder(root / "blip")
    make_coca_folder(root / "coca")
    make_beit3_folder(root / "beit3")
    return root


@pytest.fixture
async def live3(three):
    async with Live(Settings(model_repo=three)) as live:
        yield live
