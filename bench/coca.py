"""CoCa: vlserve's engine vs open_clip 3.3 itself, in the same run (run it in .venv-ref,
which has open_clip: `.venv-ref/bin/python bench/coca.py`).

coca_ViT-B-32 architecture with random weights (speed needs no training), CPU fp32, both
with the same threads:
- captioning, batch 8, exactly N new tokens (both forced to the same length), greedy and
  3 beams: vlserve's cached decode loop vs open_clip's `generate` ("top_k" with k=1 is its
  greedy; "beam_search" with one beam group), which re-runs the whole sequence every step;
- embeddings, batch 8: `image_embeddings(encode_images)` and `text_embeddings` vs
  `encode_image` / `encode_text`.

    .venv-ref/bin/python bench/coca.py [--batch 8] [--tokens 20] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import torch

from common import interleaved, machine, parse_run_args, save

from vlserve.engine.generation.params import GenerationParams
from vlserve.families.coca.config import ARCHITECTURES
from vlserve.families.coca.engine import CocaEngine
from vlserve.scheduling.runner import DirectRunner
from vlserve.tasks.caption import caption
from vlserve.tasks.models import TaskModel

TEXTS = ["a photo of a cat sitting on a red sofa", "two dogs running on the beach at sunset"] * 4


def random_folder(folder: Path, arch: str) -> tuple[Path, torch.nn.Module]:
    """open_clip's model of `arch` with its own (random) initialisation, saved in its layout."""
    import json

    from open_clip.coca_model import CoCa
    from safetensors.torch import save_file

    cfg = json.loads(json.dumps(ARCHITECTURES[arch]))
    cfg["vision_cfg"]["output_tokens"] = cfg["text_cfg"]["output_tokens"] = True
    torch.manual_seed(0)
    ref = CoCa(cfg["embed_dim"], cfg["multimodal_cfg"], cfg["text_cfg"], cfg["vision_cfg"]).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    return folder, ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="coca_ViT-B-32")
    args = parse_run_args(ap)
    folder, ref = random_folder(Path(tempfile.gettempdir()) / f"vlserve-bench-{args.arch}", args.arch)
    eng = CocaEngine(folder)
    model = TaskModel("bench", DirectRunner(eng), eng.capabilities)
    size = eng.processor.size
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    n = args.tokens
    ids = eng.tokenizer.encode_batch(TEXTS[: args.batch])

    def ours(beams):
        params = GenerationParams(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
        return lambda: asyncio.run(caption(model, pixels, params=params))

    def theirs(beams):
        # seq_len counts <start_of_text>; min_seq_len = seq_len - 1 keeps <end_of_text> away until the last
        # step, where open_clip's greedy forces it: n decoder steps for both
        kind = dict(generation_type="beam_search", num_beams=beams, num_beam_groups=1) if beams > 1 else \
            dict(generation_type="top_k", top_k=1)
        return lambda: ref.generate(pixels, seq_len=n + 1, min_seq_len=n, **kind)

    results = {}
    with torch.inference_mode():
        for name, beams in (("greedy", 1), ("beams3", 3)):
            results[f"caption_{name}"] = interleaved({"vlserve": ours(beams), "open_clip": theirs(beams)},
                                                     args.repeats)
        results["image_embeddings"] = interleaved(
            {"vlserve": lambda: eng.image_embeddings(eng.encode_images(pixels)),
             "open_clip": lambda: ref.encode_image(pixels)}, args.repeats * 3)
        results["text_embeddings"] = interleaved(
            {"vlserve": lambda: eng.text_embeddings(TEXTS[: args.batch]),
             "open_clip": lambda: ref.encode_text(ids)}, args.repeats * 3)
    table = {}
    for case, r in results.items():
        o, t = r["vlserve"]["median_s"], r["open_clip"]["median_s"]
        table[case] = {"vlserve_s": o, "open_clip_s": t, "speedup": t / o, "vlserve_items_per_s": args.batch / o,
                       "open_clip_items_per_s": args.batch / t}
    payload = {"benchmark": "coca", "config": vars(args), "attention_backend": eng.backend.name,
               "machine": machine() | {"open_clip": __import__("open_clip").__version__},
               "results": table, "runs": results}
    path = save(f"coca-{args.arch}-cpu-b{args.batch}-t{args.tokens}", payload, args.out)
    print(f"{'':18}{'vlserve s':>11}{'open_clip s':>13}{'speed-up':>10}")
    for case, r in table.items():
        print(f"{case:18}{r['vlserve_s']:11.3f}{r['open_clip_s']:13.3f}{r['speedup']:9.2f}x")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
