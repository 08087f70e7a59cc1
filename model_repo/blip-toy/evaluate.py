"""Measure blip-toy on held-out scenes through vlserve's own inference path.

    .venv/bin/python model_repo/blip-toy/evaluate.py [--model DIR] [--n 1000] [--seed 2024]

Scenes are rendered at 128 px and passed as PNG bytes, so they take the path of any client
image (decode, squash-resize, normalise). Seeds below 1,000,000 are never used in training
(vlserve.shapes.evaluation). Prints the figures and writes them to DIR/eval.json.
"""

from __future__ import annotations

import random
import time
from pathlib import Path


from vlserve import load_model
from vlserve.shapes import ANSWERS, swap_colors
from vlserve.shapes.evaluation import (EVAL_SEED, RETRIEVAL_POOL, caption_scores, image_embeddings, main, vqa_scores,
                                       world_images)

HERE = Path(__file__).resolve().parent


def evaluate(folder: str | Path, n: int = 1000, seed: int = EVAL_SEED, full: bool = True,
             dtype: str = "float32") -> dict:
    """full=False (validation during training) skips retrieval and VQA answer ranking."""
    t0 = time.time()
    model = load_model(folder, dtype=dtype)
    world, images = world_images(n, seed)
    out: dict = {"n_scenes": n, "seed": seed, "dtype": dtype}
    out.update(caption_scores(model, world, images, max_new_tokens=24))
    # VQA: every scene's five questions, generated (greedy) and ranked among the world's answers
    out.update(vqa_scores(model, world, images, "vqa", max_new_tokens=3))
    if full:
        out.update(vqa_scores(model, world, images, "vqa_ranked", candidates=list(ANSWERS)))

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
    sim = image_embeddings(model, images) @ model.embed_texts(texts).T  # (n, unique captions)
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


if __name__ == "__main__":
    main(evaluate, HERE, __doc__)
