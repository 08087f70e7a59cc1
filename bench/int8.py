"""int8 on the CPU (model.toml precision = "int8"): speed and what it costs in quality.

BLIP-base captioner, random weights, CPU, same thread count, every variant timed in this run
(interleaved rounds):
- vision encoder at batch B: torch fp32, torch int8 (models/int8.py), ONNX Runtime fp32 and int8;
- captioning B images x N greedy tokens end to end: fp32; int8 decoder (the torch default);
  int8 decoder + ONNX Runtime int8 vision (precision int8 with runtime onnx);
- quality on the random model: vision states' relative error, first-step top-1 agreement of
  the decoder's logits, greedy token agreement; on the trained blip-toy: greedy caption and VQA
  agreement with fp32 on held-out scenes.

    python bench/int8.py [--batch 8] [--tokens 20] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import torch

from common import ROOT, interleaved, machine, parse_run_args, random_blip_folder, save

from vlserve import Pipeline
from vlserve.engine.generation.params import GenerationParams
from vlserve.engine.onnx.runtime import OrtOptions
from vlserve.families.blip.engine import BlipEngine, EngineOptions
from vlserve.families.blip.model import Components
from vlserve.scheduling.runner import DirectRunner
from vlserve.shapes.evaluation import world_images
from vlserve.tasks.caption import caption
from vlserve.tasks.models import TaskModel


def variants(folder: Path, onnx_dir: Path, threads: int) -> dict[str, BlipEngine]:
    ort = OrtOptions(intra_op_threads=threads)
    onnx = dict(onnx_graphs=("vision",), onnx_dir=str(onnx_dir), ort=ort)
    return {
        "fp32": BlipEngine(folder),
        "int8_vision_decoder": BlipEngine(folder, EngineOptions(int8_graphs=("vision", "decoder"))),
        "int8_decoder": BlipEngine(folder, EngineOptions(int8_graphs=("decoder",))),
        "ort_fp32_vision": BlipEngine(folder, EngineOptions(**onnx)),
        "int8_decoder_ort_int8_vision": BlipEngine(folder, EngineOptions(**onnx, int8_graphs=("vision", "decoder"))),
    }


def speed(engines: dict, batch: int, tokens: int, repeats: int) -> dict:
    size = engines["fp32"].model.config.vision.image_size
    pixels = torch.randn(batch, 3, size, size)
    params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens)

    def total(e):
        model = TaskModel("bench", DirectRunner(e), e.capabilities)
        return lambda: asyncio.run(caption(model, pixels, params=params))

    with torch.inference_mode():
        vision = interleaved({k: (lambda e=e: e.encode_images(pixels)) for k, e in engines.items()}, repeats)
        e2e = interleaved({k: total(engines[k]) for k in ("fp32", "int8_decoder", "int8_decoder_ort_int8_vision",
                                                          "int8_vision_decoder")}, repeats)
    out = {}
    for k in engines:
        v = vision[k]["median_s"]
        row = {"vision_s": v, "vision_speedup": vision["fp32"]["median_s"] / v}
        if k in e2e:
            t = e2e[k]["median_s"]
            row.update(total_s=t, images_per_s=batch / t, decode_s=t - v,
                       speedup=e2e["fp32"]["median_s"] / t)
        out[k] = row
    for k, row in out.items():
        if "decode_s" in row:
            row["decode_speedup"] = out["fp32"]["decode_s"] / row["decode_s"]
    return out


@torch.inference_mode()
def random_model_drift(engines: dict, tokens: int) -> dict:
    """How far int8 moves a random BLIP-base: the harshest case (no trained margins)."""
    ref, int8 = engines["fp32"], engines["int8_decoder_ort_int8_vision"]
    size = ref.model.config.vision.image_size
    pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    a, b = ref.encode_images(pixels), int8.encode_images(pixels)
    params = GenerationParams(max_new_tokens=tokens, min_new_tokens=tokens)

    def greedy(e, states):
        model = TaskModel("q", DirectRunner(e), e.capabilities)
        from vlserve.tasks.caption import sample_captions
        prompts = [e.caption_prompt(None)] * states.shape[0]
        return [h[0].tokens for h in asyncio.run(sample_captions(model, states, prompts, params))]

    want, got = greedy(ref, a), greedy(int8, a)  # same states: the decoder's own drift
    first = sum(w[0] == g[0] for w, g in zip(want, got)) / len(want)
    same = sum(x == y for w, g in zip(want, got) for x, y in zip(w, g)) / sum(len(w) for w in want)
    return {"vision_states_rel_err": float((a - b).norm() / a.norm()), "first_token_top1_agreement": first,
            "greedy_token_agreement": same}


def toy_agreement(threads: int, n: int = 200) -> dict:
    toy = ROOT / "model_repo" / "blip-toy"
    if not (toy / "model.safetensors").is_file():
        return {"skipped": "model_repo/blip-toy has no trained weights"}
    scenes, images = world_images(n, 2024)
    ref = Pipeline(BlipEngine(toy))
    out = {"scenes": n}
    qa = [(images[i], q.question) for i, (_, qas) in enumerate(scenes[:100]) for q in qas]
    imgs, questions = [im for im, _ in qa], [q for _, q in qa]
    want_caps = [c[0].text for c in ref.caption(images)]
    want_ans = [a.text for a in ref.vqa(imgs, questions)]
    truth = [s.caption for s, _ in scenes]
    out["fp32_caption_exact_match"] = sum(w == t for w, t in zip(want_caps, truth)) / n
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"decoder": dict(int8_graphs=("decoder",)),
                "all_torch": dict(int8_graphs=("vision", "text", "fusion", "decoder")),
                "decoder+ort_vision": dict(int8_graphs=("vision", "decoder"), onnx_graphs=("vision",),
                                           onnx_dir=tmp, ort=OrtOptions(intra_op_threads=threads))}
        for name, opts in sets.items():
            pipe = Pipeline(BlipEngine(toy, EngineOptions(**opts)))
            caps = [c[0].text for c in pipe.caption(images)]
            ans = [a.text for a in pipe.vqa(imgs, questions)]
            out[name] = {"caption_agreement": sum(g == w for g, w in zip(caps, want_caps)) / n,
                         "caption_exact_match": sum(g == t for g, t in zip(caps, truth)) / n,
                         "vqa_agreement": sum(g == w for g, w in zip(ans, want_ans)) / len(ans)}
    return out


def main():
    ap = argparse.ArgumentParser()
    args = parse_run_args(ap)
    tmp = Path(tempfile.gettempdir())
    folder = random_blip_folder(tmp / "vlserve-bench-caption-base", "base", Components(text_decoder=True))
    engines = variants(folder, tmp / "vlserve-bench-int8-onnx", args.threads)
    results = {"speed": speed(engines, args.batch, args.tokens, args.repeats),
               "random_blip_base": random_model_drift(engines, args.tokens),
               "blip_toy": toy_agreement(args.threads)}
    payload = {"benchmark": "int8", "config": vars(args), "machine": machine(), "results": results}
    path = save(f"int8-base-cpu-b{args.batch}-t{args.tokens}", payload, args.out)
    print(f"{'':30}{'vision s':>9}{'x':>6}{'total s':>9}{'img/s':>7}{'x':>6}{'decode x':>9}")
    for k, r in results["speed"].items():
        tail = (f"{r['total_s']:9.2f}{r['images_per_s']:7.2f}{r['speedup']:6.2f}{r['decode_speedup']:9.2f}"
                if "total_s" in r else "")
        print(f"{k:30}{r['vision_s']:9.2f}{r['vision_speedup']:6.2f}{tail}")
    print("random BLIP-base:", results["random_blip_base"])
    print("blip-toy:", results["blip_toy"])
    print(f"-> {path}")


if __name__ == "__main__":
    main()
