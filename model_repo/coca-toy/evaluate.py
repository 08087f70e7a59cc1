"""Measure coca-toy on held-out scenes through vlserve's own inference path.

    .venv/bin/python model_repo/coca-toy/evaluate.py [--model DIR] [--n 1000] [--seed 2024]

As blip-toy's evaluate.py: scenes rendered at 128 px go in as PNG bytes, seeds below
1,000,000 are never trained on; figures printed and written to DIR/eval.json. CoCa has no
match head and no VQA: captions (greedy exact match) and ITC retrieval.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from pathlib import Path

import torch

from vlserve import load_model
from vlserve.shapes import generate, render, swap_colors

HERE = Path(__file__).resolve().parent
EVAL_SEED = 2024
VAL_SEED = 999
RETRIEVAL_POOL = 100


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def evaluate(folder: str | Path, n: int = 1000, seed: int = EVAL_SEED, batch: int = 100,
             dtype: str = "float32") -> dict:
    t0 = time.time()
    model = load_model(folder, dtype=dtype)
    world = generate(n, seed)
    images = [png(render(scene)) for scene, _ in world]
    out: dict = {"n_scenes": n, "seed": seed, "dtype": dtype}
    got = []
    for i in range(0, n, batch):
        got += [c[0].text for c in model.caption(images[i:i + batch], max_new_tokens=16, num_beams=1)]
    hits = [g == scene.caption for g, (scene, _) in zip(got, world)]
    out["caption_exact_match"] = sum(hits) / n
    for k in (1, 2):
        sub = [h for h, (scene, _) in zip(hits, world) if len(scene.objects) == k]
        out[f"caption_exact_match_{k}obj"] = sum(sub) / max(len(sub), 1)
    out["caption_errors"] = [{"want": s.caption, "got": g} for g, h, (s, _) in zip(got, hits, world) if not h][:20]

    img = torch.cat([model.embed_images(images[i:i + batch]) for i in range(0, n, batch)])
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
    out["itc_r1"] = sum(hits) / len(hits)
    out["retrieval_pool"] = RETRIEVAL_POOL
    pairs = [(i, scene) for i, (scene, _) in enumerate(world) if len(scene.objects) == 2]
    swaps = model.embed_texts([swap_colors(s) for _, s in pairs])
    trues = model.embed_texts([s.caption for _, s in pairs])
    rows = torch.tensor([i for i, _ in pairs])
    out["itc_color_swap_accuracy"] = float(((img[rows] * trues).sum(-1) > (img[rows] * swaps).sum(-1)).float().mean())
    out["eval_seconds"] = round(time.time() - t0, 1)
    return out


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
