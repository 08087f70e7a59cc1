"""A tiny random model repository and the real app over it, in-process."""

from __future__ import annotations

import httpx
import pytest

import vlserve_client as vc
from tests.api.conftest import Live, png
from tests.helpers.own_blip import make_folder
from vlserve.settings import Settings

RED, BLUE = png((220, 30, 30)), png((30, 70, 220), (64, 64))
ANSWERS = ["red", "blue", "yes"]


def sdk(live: Live, **kwargs) -> vc.AsyncClient:
    """An AsyncClient talking to the in-process app."""
    return vc.AsyncClient("http://test", transport=httpx.ASGITransport(app=live.app), **kwargs)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def client_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("client-repo")
    make_folder(root / "toy")
    (root / "toy" / "model.toml").write_text(
        f'name = "toy"\n[generation.caption]\nmax_new_tokens = 6\n[vqa]\nanswers = {ANSWERS!r}\n'.replace("'", '"'))
    return root


@pytest.fixture
def settings(client_repo):
    return Settings(model_repo=client_repo, max_images=4)


@pytest.fixture
async def live(settings):
    async with Live(settings) as live:
        yield live
