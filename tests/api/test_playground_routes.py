"""The playground's routes without a browser: the page and its files are public (even with
an API key and closed docs) while the API stays closed; the example scenes are the shapes
world's held-out scenes. The page in a browser: tests/e2e/test_playground.py."""

from __future__ import annotations

import io
import re

import pytest

from tests.api.conftest import Live
from vlserve.api.playground import EXAMPLE_SEED, EXAMPLES
from vlserve.settings import Settings
from vlserve.shapes import generate, render

pytestmark = pytest.mark.anyio


async def test_the_page_and_its_files_are_public_and_same_origin(repo):
    async with Live(Settings(model_repo=repo, api_key="s3cret", auth_metrics_and_docs=True)) as live:
        page = await live.client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert refs and all(r.startswith(("/", "data:")) for r in refs), refs  # nothing from a CDN
        for ref in (r for r in refs if r.startswith("/playground/")):
            r = await live.client.get(ref)
            assert r.status_code == 200, ref
        js = await live.client.get("/playground/static/playground.js")
        assert "javascript" in js.headers["content-type"]
        assert (await live.client.get("/v1/models")).status_code == 401  # what the page asks for needs the key
        assert (await live.client.get("/playground/static/missing.js")).status_code == 404


async def test_examples_are_held_out_scenes_with_their_questions(live):
    listed = (await live.client.get("/playground/examples")).json()
    scenes = generate(EXAMPLES, EXAMPLE_SEED)
    assert len(listed) == EXAMPLES
    for item, (scene, qa) in zip(listed, scenes):
        assert item["caption"] == scene.caption
        assert [q["answer"] for q in item["questions"]] == [q.answer for q in qa]
        assert scene.caption not in item["negatives"] and item["negatives"]
    png = await live.client.get(listed[0]["url"])
    buf = io.BytesIO()
    render(scenes[0][0]).save(buf, format="PNG")
    assert png.headers["content-type"] == "image/png" and png.content == buf.getvalue()
    missing = await live.client.get(f"/playground/examples/{EXAMPLES}.png")
    assert missing.status_code == 404 and "error" in missing.json()
