"""The playground in a real browser: Debian's chromium driven by Playwright against a
`vlserve serve` subprocess (with an API key) serving the shipped blip-toy and beit3-toy. The page
must show what the API itself answers for the same held-out scene.

Needs /usr/bin/chromium (`.ci/run` installs it and sets VLSERVE_REQUIRE_BROWSER=1, so CI
fails rather than skips). VLSERVE_SCREENSHOTS=<dir> keeps screenshots (the README's)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.server_process import ServerProcess
from vlserve.shapes import generate, render, swap_colors

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
KEY = "playground-key"
# chromium as this machine's closed network needs it: no background connections
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    if os.environ.get("VLSERVE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} missing: the browser test needs Debian's chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("playground-repo")
    for name in ("blip-toy", "beit3-toy"):  # beit3-toy sorts first: the page must pick the default
        shutil.copytree(ROOT / "model_repo" / name, repo / name)
    proc = ServerProcess("--model-repo", str(repo), env={"VLSERVE_API_KEY": KEY})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(60_000)
        yield page
        browser.close()
        assert not errors, f"the page threw: {errors}"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A held-out two-object scene (the toys' evaluation seed, past the page's own examples) as a PNG."""
    scene, qa = next((s, qa) for s, qa in generate(40, 2024)[8:] if s.relation)
    path = tmp_path_factory.mktemp("upload") / "scene.png"
    render(scene).save(path)
    return scene, qa, path


def api(server, path: str, body: dict) -> dict:
    resp = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    resp.raise_for_status()
    return resp.json()


def shot(page, name: str) -> None:
    folder = os.environ.get("VLSERVE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_without_the_key_the_page_shows_the_servers_refusal(server, page):
    page.goto(server.url + "/")
    page.wait_for_selector("#error:not([hidden])")
    assert "401" in page.inner_text("#error")
    assert "API key" in page.inner_text("#error")  # the server's own words
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model option[value='blip-toy']", state="attached")
    assert page.input_value("#model") == "blip-toy"
    assert page.evaluate("sessionStorage.getItem('vlserve-api-key')") == KEY


def test_caption_of_an_uploaded_scene_is_the_apis(server, page, scene):
    _, _, path = scene
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#cap-run")
    page.wait_for_selector("#cap-out li")
    image = base64.b64encode(path.read_bytes()).decode()
    want = api(server, "/v1/caption", {"images": [image]})["captions"][0][0]
    assert page.inner_text("#cap-out .caption") == want["text"]
    assert f"[{', '.join(map(str, want['tokens']))}]" in page.inner_text("#cap-out .tokens")
    assert not page.is_visible("#error")


def test_question_and_two_texts(server, page, scene):
    sc, qa, path = scene
    image = base64.b64encode(path.read_bytes()).decode()
    question = next(q for q in qa if q.type == "color")
    page.fill("#vqa-question", question.question)
    page.click("#vqa-run")
    page.wait_for_selector("#vqa-out .bar-row")
    want = api(server, "/v1/vqa", {"images": [image], "questions": [question.question], "mode": "generate"})
    assert page.inner_text("#vqa-out strong") == want["answers"][0]["text"]
    page.select_option("#vqa-mode", "rank")  # the candidates as bars, best first
    page.fill("#vqa-candidates", "red, green, blue, yellow")
    page.click("#vqa-run")
    page.wait_for_selector("#vqa-out .bar-row >> nth=3")
    want = api(server, "/v1/vqa", {"images": [image], "questions": [question.question], "mode": "rank",
                                   "candidates": ["red", "green", "blue", "yellow"], "top_k": 5})
    rows = page.locator("#vqa-out .bar-row")
    assert [rows.nth(i).locator("span").first.inner_text() for i in range(4)] == \
        [r["text"] for r in want["answers"][0]["ranked"]]

    texts = [sc.caption, swap_colors(sc)]  # a near miss: ITC and ITM disagree on such pairs
    page.fill("#score-texts", "\n".join(texts))
    page.click("#score-run")
    page.wait_for_selector("#score-out tr >> nth=2")
    want = api(server, "/v1/retrieval/score", {"images": [image], "texts": texts, "heads": ["itc", "itm"]})
    rows = page.locator("#score-out tr")
    for j, text in enumerate(texts):
        cells = rows.nth(j + 1).locator("td")
        assert cells.nth(0).inner_text() == text
        assert float(cells.nth(1).inner_text()) == pytest.approx(want["itc"][0][j], abs=1e-4)
        assert float(cells.nth(2).inner_text()) == pytest.approx(want["itm"][0][j], abs=1e-3)
    shot(page, "playground.png")


def test_streamed_caption_and_example_ranking(server, page):
    page.locator("#examples img").nth(1).click()
    page.wait_for_function("document.querySelector('#image-info').textContent.startsWith('example 1')")
    assert page.locator("#score-out tr").count() == 0  # the last image's scores are gone
    page.check("#cap-stream")
    page.click("#cap-run")
    page.wait_for_function("document.querySelector('#cap-out .tokens')?.textContent.startsWith('streamed')")
    caption = page.inner_text("#cap-out .caption")
    page.uncheck("#cap-stream")
    examples = httpx.get(server.url + "/playground/examples").json()
    assert caption  # the stream carries the same greedy caption as the caption route
    png = httpx.get(server.url + examples[1]["url"]).content
    want = api(server, "/v1/caption", {"images": [base64.b64encode(png).decode()]})["captions"][0][0]["text"]
    assert caption == want

    page.click("#rank-run")
    page.wait_for_selector("#rank-out li")
    assert page.locator("#rank-out li").count() == len(examples)
    shot(page, "playground-stream-rank.png")


def test_beit3_toy_classifies_answers_and_has_no_itm(server, page, scene, tmp_path):
    """Another family's capabilities shape the page: VQA by classification only, ITC only, and
    no CapFilt or ITM controls asked of a model without a match head."""
    sc, qa, path = scene
    path = Path(shutil.copy(path, tmp_path / "again.png"))  # a new name: the same one fires no change
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('#image-info').textContent.includes('again.png')")
    page.select_option("#model", "beit3-toy")
    assert page.eval_on_selector_all("#vqa-mode option", "os => os.map(o => o.value)") == ["classify"]
    assert "beit3" in page.inner_text("#model-info")
    image = base64.b64encode(path.read_bytes()).decode()
    question = next(q for q in qa if q.type == "shape")
    page.fill("#vqa-question", question.question)
    page.fill("#vqa-top-k", "3")
    page.click("#vqa-run")
    page.wait_for_selector("#vqa-out .bar-row >> nth=2")
    want = api(server, "/v1/vqa", {"model": "beit3-toy", "images": [image], "questions": [question.question],
                                   "mode": "classify", "top_k": 3})["answers"][0]
    assert page.inner_text("#vqa-out strong") == want["text"]
    rows = page.locator("#vqa-out .bar-row")
    assert [rows.nth(i).locator("span").first.inner_text() for i in range(3)] == [r["text"] for r in want["ranked"]]

    texts = [sc.caption, swap_colors(sc)]
    page.fill("#score-texts", "\n".join(texts))
    page.click("#score-run")
    page.wait_for_selector("#score-out tr >> nth=2")
    assert page.locator("#score-out th").all_inner_texts() == ["text", "ITC cosine"]
    want = api(server, "/v1/retrieval/score", {"model": "beit3-toy", "images": [image], "texts": texts})
    cells = page.locator("#score-out tr").nth(1).locator("td")
    assert float(cells.nth(1).inner_text()) == pytest.approx(want["itc"][0][0], abs=1e-4)
    assert not page.is_visible("#error")
    page.select_option("#model", "blip-toy")  # back to the default for the tests after


def test_a_non_image_upload_shows_the_servers_message(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    page.click("#cap-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")

