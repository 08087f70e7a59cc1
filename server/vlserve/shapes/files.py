"""Writing a seeded set of scenes to disk: PNG images plus one JSON of their annotations."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .render import render
from .world import generate

INDEX = "scenes.json"


def write_scenes(out: str | Path, n: int, seed: int, two_prob: float = 0.5) -> dict:
    """Write `n` scenes of `seed` under `out` (scene_00000.png ... and scenes.json); returns a summary."""
    if n < 1:
        raise ValueError("n must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n - 1)))
    records = []
    for i, (scene, qas) in enumerate(generate(n, seed, two_prob)):
        name = f"scene_{i:0{width}d}.png"
        render(scene).save(out / name)
        records.append({
            "image": name,
            "caption": scene.caption,
            "background": scene.background,
            "relation": scene.relation,
            "objects": [{"shape": o.shape, "color": o.color, "size": o.size,
                         "box": [o.x, o.y, o.x + o.side, o.y + o.side]} for o in scene.objects],
            "qa": [asdict(qa) for qa in qas],
        })
    index = out / INDEX
    index.write_text(json.dumps({"seed": seed, "n": n, "scenes": records}, indent=1) + "\n")
    return {"out": str(out), "n": n, "seed": seed, "index": str(index),
            "two_objects": sum(len(r["objects"]) == 2 for r in records)}
