"""Measure coca-toy on held-out scenes through vlserve's own inference path.

    .venv/bin/python model_repo/coca-toy/evaluate.py [--model DIR] [--n 1000] [--seed 2024]

As the other toys' evaluate.py (vlserve.shapes.evaluation): PNG bytes in, seeds below
1,000,000 never trained on, figures printed and written to DIR/eval.json. CoCa has no
match head and no VQA: captions (greedy exact match) and ITC retrieval.
"""

from __future__ import annotations

import time
from pathlib import Path

from vlserve import load_model
from vlserve.shapes.evaluation import EVAL_SEED, caption_scores, itc_scores, main, world_images

HERE = Path(__file__).resolve().parent
MAX_NEW_TOKENS = 16


def evaluate(folder: str | Path, n: int = 1000, seed: int = EVAL_SEED, dtype: str = "float32") -> dict:
    t0 = time.time()
    model = load_model(folder, dtype=dtype)
    world, images = world_images(n, seed)
    out: dict = {"n_scenes": n, "seed": seed, "dtype": dtype}
    out.update(caption_scores(model, world, images, MAX_NEW_TOKENS))
    out.update(itc_scores(model, world, images, seed))
    out["eval_seconds"] = round(time.time() - t0, 1)
    return out


if __name__ == "__main__":
    main(evaluate, HERE, __doc__)
