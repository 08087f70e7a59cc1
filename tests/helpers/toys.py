"""The shipped toy models (model_repo/*-toy) and held-out shapes-world scenes, shared by their
model, ONNX and HTTP tests. Training draws seeds >= 1,000,000, so small seeds are held out."""

from pathlib import Path

import pytest

from vlserve.shapes.evaluation import world_images

REPO = Path(__file__).resolve().parents[2] / "model_repo"
WEIGHTS = {"blip-toy": "model.safetensors", "coca-toy": "open_clip_model.safetensors", "beit3-toy": "beit3.pth"}


def trained(name: str) -> bool:
    return (REPO / name / WEIGHTS[name]).is_file()


def needs(name: str):
    return pytest.mark.skipif(not trained(name), reason=f"model_repo/{name} has no trained weights yet")


def held_out_world(n: int, seed: int):
    """(scene, questions) pairs and each scene as PNG bytes, as a client would send it."""
    return world_images(n, seed)


def toy_fixtures(folder: Path, n: int, seed: int = 7):
    """Module-scoped `toy` (the loaded model) and `world` (held-out scenes) fixtures:
    `toy, world = toy_fixtures(MODEL, N)` in a test module."""
    from vlserve import load_model

    @pytest.fixture(scope="module")
    def toy():
        return load_model(folder)

    @pytest.fixture(scope="module")
    def world():
        return held_out_world(n, seed)

    return toy, world


def check_captions(toy, world, **options) -> None:
    """Captions equal the canonical one for >= 80% of the scenes and >= 70% of the two-object
    ones (relations and order, not only single shapes)."""
    scenes, images = world
    got = [c[0].text for c in toy.caption(images, **options)]
    hits = [g == s.caption for g, (s, _) in zip(got, scenes)]
    two = [h for h, (s, _) in zip(hits, scenes) if len(s.objects) == 2]
    assert sum(hits) / len(hits) >= 0.8, list(zip(got, [s.caption for s, _ in scenes]))
    assert len(two) >= 15 and sum(two) / len(two) >= 0.7


def check_answers(answers, qa) -> None:
    """VQA answers right for >= 85% of the questions and >= 60% of each question type."""
    from vlserve.shapes import QUESTION_TYPES

    ok = {t: [a.text == q.answer for a, (_, q) in zip(answers, qa) if q.type == t] for t in QUESTION_TYPES}
    assert sum(map(sum, ok.values())) / len(qa) >= 0.85
    assert all(sum(v) / len(v) >= 0.6 for v in ok.values()), {t: sum(v) / len(v) for t, v in ok.items()}


def check_itc_retrieval(toy, world) -> None:
    """ITC ranks the true caption first among the scenes' distinct captions for >= 80%."""
    scenes, images = world
    captions = sorted({s.caption for s, _ in scenes})
    sim = toy.embed_images(images) @ toy.embed_texts(captions).T
    best = [captions[j] for j in sim.argmax(dim=1).tolist()]
    assert sum(b == s.caption for b, (s, _) in zip(best, scenes)) / len(scenes) >= 0.8


def check_int8_agreement(folder: Path, toy, world, **options) -> None:
    """precision int8 agrees with the float32 toy on >= 99% of greedy captions (issue 18)."""
    from vlserve import load_model

    _, images = world
    int8 = load_model(folder, precision="int8")
    got = [c[0].text for c in int8.caption(images, **options)]
    want = [c[0].text for c in toy.caption(images, **options)]
    assert sum(g == w for g, w in zip(got, want)) / len(want) >= 0.99, list(zip(got, want))
