"""Measure blip-toy on held-out scenes through vlserve's own inference path.

    .venv/bin/python model_repo/blip-toy/evaluate.py [--model DIR] [--n 1000] [--seed 2024]

Scenes are rendered at 128 px and passed as PNG bytes, so they take the path of any client
image (decode, squash-resize, normalise). Seeds below 1,000,000 are never used in training.
Prints the figures and writes them to DIR/eval.json.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from vlserve import load_model
from vlserve.shapes import ANSWERS, QUESTION_TYPES, generate, render, swap_colors

HERE = Path(__file__).resolve().parent
EVAL_SEED = 2024  # the model card's figures
VAL_SEED = 999  # validation during training
RETRIEVAL_POOL = 100  # candidates per image query: the true caption and 99 of other scenes


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chunks(n: int, size: int):
    return (range(i, min(i + size, n)) for i in range(0, n, size))


def evaluate(folder: str | Path, n: int = 1000, seed: int = EVAL_SEED, full: bool = True,
             batch: int = 100, dtype: str = "float32") -> dict:
    """full=False (validation during training) skips retrieval and VQA answer ranking."""
    t0 = time.time()
    model = load_model(folder, dtype=dtype)
    world = generate(n, seed)
    images = [png(render(scene)) for scene, _ in world]
    out: dict = {"n_scenes": n, "seed": seed, "dtype": dtype}

    # captions: greedy, exact match with the canonical caption
    got = []
    for idx in _chunks(n, batch):
        got += [c[0].text for c in model.caption([images[i] for i in idx], max_new_tokens=24, num_beams=1)]
    hits = [g == scene.caption for g, (scene, _) in zip(got, world)]
    out["caption_exact_match"] = sum(hits) / n
    for k in (1, 2):
        sub = [h for h, (scene, _) in zip(hits, world) if len(scene.objects) == k]
        out[f"caption_exact_match_{k}obj"] = sum(sub) / max(len(sub), 1)
    out["caption_errors"] = [{"want": s.caption, "got": g} for g, h, (s, _) in zip(got, hits, world) if not h][:20]

    # VQA: every scene's five questions, generated (greedy) and ranked among the world's answers
    qa = [(i, q) for i, (_, qas) in enumerate(world) for q in qas]
    gen_ok, rank_ok = defaultdict(list), defaultdict(list)
    for idx in _chunks(len(qa), batch):
        imgs = [images[qa[j][0]] for j in idx]
        qs = [qa[j][1].question for j in idx]
        generated = model.vqa(imgs, qs, max_new_tokens=3)
        ranked = model.vqa(imgs, qs, candidates=list(ANSWERS)) if full else generated
        for j, g, r in zip(idx, generated, ranked):
            q = qa[j][1]
            gen_ok[q.type].append(g.text == q.answer)
            rank_ok[q.type].append(r.text == q.answer)
    for name, ok in (("vqa", gen_ok), ("vqa_ranked", rank_ok))[: 2 if full else 1]:
        out[f"{name}_accuracy"] = sum(sum(v) for v in ok.values()) / len(qa)
        out[f"{name}_by_type"] = {t: sum(ok[t]) / len(ok[t]) for t in QUESTION_TYPES}

    # ITM hard negatives: true caption vs the two objects' colours swapped
    pairs = [(i, scene) for i, (scene, _) in enumerate(world) if len(scene.objects) == 2]
    itm_ok, itc_ok = [], []
    for i, scene in pairs:
        s = model.score([images[i]], [scene.caption, swap_colors(scene)], heads=("itc", "itm"))
        itm_ok.append(bool(s["itm"][0, 0] > s["itm"][0, 1]))
        itc_ok.append(bool(s["itc"][0, 0] > s["itc"][0, 1]))
    out["itm_color_swap_accuracy"] = sum(itm_ok) / len(pairs)
    out["itc_color_swap_accuracy"] = sum(itc_ok) / len(pairs)
    out["n_color_swap_pairs"] = len(pairs)

    if full:
        out.update(_retrieval(model, world, images, seed))
    out["eval_seconds"] = round(time.time() - t0, 1)
    return out


def _retrieval(model, world, images, seed: int) -> dict:
    """Image -> text R@1 among RETRIEVAL_POOL distinct captions: ITC alone, and ITC + ITM re-rank."""
    rng = random.Random(seed)
    captions = [scene.caption for scene, _ in world]
    texts = sorted(set(captions))
    index = {t: k for k, t in enumerate(texts)}
    img = torch.cat([model.embed_images(images[i:i + 100]) for i in range(0, len(images), 100)])
    sim = img @ model.embed_texts(texts).T  # (n, unique captions)
    itc_hits, itm_hits = [], []
    for i, cap in enumerate(captions):
        others = sorted({c for j, c in enumerate(captions) if j != i and c != cap})
        pool = [cap] + rng.sample(others, min(RETRIEVAL_POOL - 1, len(others)))  # all of them in small runs
        scores = sim[i, [index[t] for t in pool]]
        itc_hits.append(bool((scores[1:] < scores[0]).all()))
        if i < 200:  # BLIP's protocol (ITC top-16, ITM re-rank) on the first 200 queries
            ranked = model.rank(image=images[i], candidates=pool, k_itc=16, top_k=1)
            itm_hits.append(ranked[0].index == 0)
    return {"itc_r1": sum(itc_hits) / len(itc_hits), "itc_itm_r1_first200": sum(itm_hits) / len(itm_hits),
            "retrieval_pool": RETRIEVAL_POOL}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=HERE)
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


if __name__ == "__main__":
    main()
