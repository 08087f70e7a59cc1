"""Captioning throughput: vlserve's engine vs transformers' BlipForConditionalGeneration.generate.

BLIP-base architecture (random weights), greedy, exactly N new tokens (min = max, so both
do the same work), same thread count, both measured in this run. Reports images/s, the
ratio and the split between the vision encoder and decoding.

    python bench/caption.py [--arch base] [--batch 8] [--tokens 20] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import torch

from common import interleaved, machine, random_blip_folder, save

from vlserve.families.blip.engine import BlipEngine, BlipOptions, EngineOptions
from vlserve.engine.generation.params import GenerationParams
from vlserve.families.blip.model import Components
from vlserve.scheduling.runner import DirectRunner
from vlserve.tasks.caption import caption
from vlserve.tasks.models import TaskModel


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--hf-dtype", default=None, help="transformers' dtype (default: same)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--cross", default="auto", help="decoder cross-attention: auto | cached | absorbed")
    ap.add_argument("--folder", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.folder or Path(tempfile.gettempdir()) / f"vlserve-bench-caption-{args.arch}")
    random_blip_folder(folder, args.arch, Components(text_decoder=True))

    eng = BlipEngine(folder, EngineOptions(device=args.device, dtype=args.dtype, attention=args.attention),
                     BlipOptions(cross_attention=args.cross))
    size = eng.model.config.vision.image_size
    pixels = torch.randn(args.batch, 3, size, size)
    params = GenerationParams(max_new_tokens=args.tokens, min_new_tokens=args.tokens, num_beams=args.beams)
    model = TaskModel("bench", DirectRunner(eng), eng.capabilities)

    def ours_total():
        asyncio.run(caption(model, pixels, params=params))
        sync(args.device)

    def ours_vision():
        eng.encode_images(pixels)
        sync(args.device)

    import transformers

    hf_dtype = getattr(torch, args.hf_dtype or {"float32": "float32", "bfloat16": "bfloat16",
                                                "float16": "float16"}[args.dtype])
    hf = transformers.BlipForConditionalGeneration.from_pretrained(folder, dtype=hf_dtype).to(args.device).eval()
    hf_pixels = pixels.to(args.device, hf_dtype)

    @torch.inference_mode()
    def hf_total():
        hf.generate(pixel_values=hf_pixels, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                    num_beams=args.beams, do_sample=False)
        sync(args.device)

    @torch.inference_mode()
    def hf_vision():
        hf.vision_model(pixel_values=hf_pixels)
        sync(args.device)

    t = interleaved({"vlserve": ours_total, "transformers": hf_total}, args.repeats)
    v = interleaved({"vlserve": ours_vision, "transformers": hf_vision}, args.repeats)
    results = {}
    for name in ("vlserve", "transformers"):
        total, vision = t[name]["median_s"], v[name]["median_s"]
        results[name] = {"total_s": total, "vision_s": vision, "decode_s": total - vision,
                         "images_per_s": args.batch / total, "total_runs": t[name]["runs"],
                         "vision_runs": v[name]["runs"]}
    o, h = results["vlserve"], results["transformers"]
    ratios = {"end_to_end": h["total_s"] / o["total_s"], "vision": h["vision_s"] / o["vision_s"],
              "decode": h["decode_s"] / o["decode_s"]}
    payload = {"benchmark": "caption", "config": vars(args), "attention_backend": eng.backend.name,
               "cross_attention": eng.cross_mode,
               "machine": machine(), "results": results, "speedup_vs_transformers": ratios}
    path = save(f"caption-{args.arch}-{args.device}-{args.dtype}-b{args.batch}-beams{args.beams}-{eng.cross_mode}",
                payload, args.out)
    print(f"{'':14}{'images/s':>10}{'total s':>10}{'vision s':>10}{'decode s':>10}")
    for name, r in results.items():
        print(f"{name:14}{r['images_per_s']:10.2f}{r['total_s']:10.3f}{r['vision_s']:10.3f}{r['decode_s']:10.3f}")
    print(f"speed-up: end-to-end {ratios['end_to_end']:.2f}x, vision {ratios['vision']:.2f}x, "
          f"decode {ratios['decode']:.2f}x  -> {path}")


if __name__ == "__main__":
    main()
