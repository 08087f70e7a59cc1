"""The toy models' held-out measurements (model_repo/*/evaluate.py), through vlserve's own
inference path: scenes rendered at 128 px go in as PNG bytes, as any client image does.
Seeds below 1,000,000 are never trained on. Not imported by the server."""

from __future__ import annotations

import argparse
import io
import json
import random
from collections import defaultdict
from pathlib import Path

import torch

from .render import render
from .world import QUESTION_TYPES, flip_relation, generate, swap_colors

EVAL_SEED = 2024  # the model cards' figures
VAL_SEED = 999  # validation during training
RETRIEVAL_POOL = 100  # candidates per image query: the true caption and 99 of other scenes


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def world_images(n: int, seed: int):
    world = generate(n, seed)
    return world, [png(render(scene)) for scene, _ in world]


def chunks(n: int, size: int):
    return (range(i, min(i + size, n)) for i in range(0, n, size))


def caption_scores(model, world, images, max_new_tokens: int, batch: int = 100) -> dict:
    """Greedy captions: exact match with the canonical caption, overall and by object count."""
    got = []
    for idx in chunks(len(world), batch):
        got += [c[0].text for c in model.caption([images[i] for i in idx], max_new_tokens=max_new_tokens,
                                                 num_beams=1)]
    hits = [g == scene.caption for g, (scene, _) in zip(got, world)]
    out = {"caption_exact_match": sum(hits) / len(world)}
    for k in (1, 2):
        sub = [h for h, (scene, _) in zip(hits, world) if len(scene.objects) == k]
        out[f"caption_exact_match_{k}obj"] = sum(sub) / max(len(sub), 1)
    two = [(g, s) for g, (s, _) in zip(got, world) if len(s.objects) == 2]
    # a wrong relation alone (objects and order right) is a separate failure: reading the layout
    out["caption_relation_only_errors_2obj"] = sum(g == flip_relation(s) for g, s in two) / max(len(two), 1)
    out["caption_errors"] = [{"want": s.caption, "got": g} for g, h, (s, _) in zip(got, hits, world) if not h][:20]
    return out


def vqa_scores(model, world, images, name: str = "vqa", batch: int = 100, **options) -> dict:
    """Every scene's five questions; accuracy overall and by question type."""
    qa = [(i, q) for i, (_, qas) in enumerate(world) for q in qas]
    ok = defaultdict(list)
    for idx in chunks(len(qa), batch):
        answers = model.vqa([images[qa[j][0]] for j in idx], [qa[j][1].question for j in idx], **options)
        for j, a in zip(idx, answers):
            ok[qa[j][1].type].append(a.text == qa[j][1].answer)
    return {f"{name}_accuracy": sum(sum(v) for v in ok.values()) / len(qa),
            f"{name}_by_type": {t: sum(ok[t]) / len(ok[t]) for t in QUESTION_TYPES}}


def image_embeddings(model, images, batch: int = 100) -> torch.Tensor:
    return torch.cat([model.embed_images(images[i:i + batch]) for i in range(0, len(images), batch)])


def itc_scores(model, world, images, seed: int) -> dict:
    """Image -> text R@1 among RETRIEVAL_POOL distinct captions by ITC, and on two-object
    scenes the colour-swap and relation-flip tests (true caption vs the two objects' colours
    exchanged, vs the other relation)."""
    img = image_embeddings(model, images)
    captions = [scene.caption for scene, _ in world]
    texts = sorted(set(captions))
    index = {t: k for k, t in enumerate(texts)}
    sim = img @ model.embed_texts(texts).T  # (n, unique captions)
    rng, hits = random.Random(seed), []
    for i, cap in enumerate(captions):
        others = sorted({c for j, c in enumerate(captions) if j != i and c != cap})
        pool = [cap] + rng.sample(others, min(RETRIEVAL_POOL - 1, len(others)))
        scores = sim[i, [index[t] for t in pool]]
        hits.append(bool((scores[1:] < scores[0]).all()))
    pairs = [(i, scene) for i, (scene, _) in enumerate(world) if len(scene.objects) == 2]
    trues = model.embed_texts([s.caption for _, s in pairs])
    rows = torch.tensor([i for i, _ in pairs])

    def beats(twin) -> float:  # share of two-object scenes whose true caption outscores its twin
        twins = model.embed_texts([twin(s) for _, s in pairs])
        return float(((img[rows] * trues).sum(-1) > (img[rows] * twins).sum(-1)).float().mean())

    return {"itc_r1": sum(hits) / len(hits), "retrieval_pool": RETRIEVAL_POOL,
            "itc_color_swap_accuracy": beats(swap_colors), "itc_relation_flip_accuracy": beats(flip_relation)}


def main(evaluate, folder: Path, doc: str) -> None:
    """The toys' evaluate.py command line: evaluate(folder, n, seed, dtype) -> figures, printed
    and written to DIR/eval.json."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=folder)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    scores = evaluate(args.model, n=args.n, seed=args.seed, dtype=args.dtype)
    print(json.dumps(scores, indent=2))
    if not args.no_write:
        (args.model / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")


def validate(evaluate, folder: Path, n: int, **options) -> dict:
    """The toys' validation during training: evaluate on VAL_SEED's scenes, a few errors kept."""
    scores = evaluate(folder, n=n, seed=VAL_SEED, **options)
    scores["caption_errors"] = scores["caption_errors"][:6]
    return scores
