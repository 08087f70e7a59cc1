"""Encoder throughput on the CPU: ONNX Runtime vs vlserve's torch graphs vs transformers.

BLIP-base vision and text encoders (random weights), batch 1 and 8, one thread count for
all three, measured interleaved in this run (the machine may be shared). ONNX Runtime at
each graph optimisation level; `--int8` adds dynamic int8 quantisation of the ONNX graphs
with its accuracy cost (ITC cosine drift here; caption agreement on blip-toy when trained).

    python bench/onnx_graphs.py [--threads 2] [--repeats 3] [--int8] [--quick]

--quick: a tiny architecture and one repeat, to prove the script works.
"""

from __future__ import annotations

from pathlib import Path

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import ROOT, interleaved, machine, random_blip_folder, save, scratch_dir  # noqa: E402

from vlserve.families.blip.engine import BlipEngine, EngineOptions  # noqa: E402
from vlserve.families.blip.saver import save_blip  # noqa: E402
from vlserve.families.blip.onnx.export import export_graphs, file_name, missing_exports  # noqa: E402
from vlserve.families.blip.onnx.graphs import graph_spec  # noqa: E402
from vlserve.engine.onnx.quantize import ensure_int8  # noqa: E402
from vlserve.engine.onnx.runtime import LEVELS, OrtGraph, OrtOptions  # noqa: E402
from vlserve.families.blip.tokenizer import wordpiece_tokenizer  # noqa: E402
from vlserve.families.blip.config import preset  # noqa: E402
from vlserve.families.blip.model import Blip, Components  # noqa: E402

COMPONENTS = Components(text_encoder=True, text_encoder_cross=True, projections=True, itm_head=True)
GRAPHS = ("vision", "text")


def quick_folder(folder: Path) -> Path:
    """A tiny BLIP (2 layers, 64 wide, 64-pixel images) for --quick."""
    if (folder / "model.safetensors").is_file():
        return folder
    base = preset("base")
    vision = dataclasses.replace(base.vision, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, image_size=64)
    text = dataclasses.replace(base.text, hidden_size=64, encoder_hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, vocab_size=300)
    torch.manual_seed(0)
    model = Blip(dataclasses.replace(base, vision=vision, text=text), COMPONENTS)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.02)
    save_blip(model, folder)
    wordpiece_tokenizer([f"w{i}" for i in range(200)]).save(str(folder / "tokenizer.json"))
    return folder


def cosine_drift(a: torch.Tensor, b: torch.Tensor) -> dict:
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
    return {"mean_1_minus_cos": float((1 - cos).mean()), "max_1_minus_cos": float((1 - cos).max())}


def toy_caption_agreement(int8_dir: Path, threads: int) -> dict:
    """Greedy captions of held-out shapes-world scenes: vision on int8 ONNX vs on torch."""
    import io

    from vlserve import Pipeline
    from vlserve.shapes import generate, render

    toy = ROOT / "model_repo" / "blip-toy"
    if not (toy / "model.safetensors").is_file():
        return {"skipped": "model_repo/blip-toy has no trained weights"}
    ort = OrtOptions(intra_op_threads=threads)
    onnx = BlipEngine(toy, EngineOptions(onnx_graphs=("vision",), onnx_dir=str(int8_dir), ort=ort,
                                         int8_graphs=("vision",)))  # the server's precision = "int8" path
    images = []
    for scene, _ in generate(200, seed=7):
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG")
        images.append(buf.getvalue())
    got = [c[0].text for c in Pipeline(onnx).caption(images, max_new_tokens=24)]
    want = [c[0].text for c in Pipeline(BlipEngine(toy)).caption(images, max_new_tokens=24)]
    return {"scenes": len(images), "agreement": sum(g == w for g, w in zip(got, want)) / len(images)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--text-len", type=int, default=24, help="words per text")
    ap.add_argument("--int8", action="store_true", help="also dynamic int8 quantisation, with its accuracy cost")
    ap.add_argument("--quick", action="store_true", help="tiny model, one repeat: proves the script runs")
    ap.add_argument("--toy-agreement", action="store_true",
                    help="only int8 vision vs torch: greedy caption agreement on the trained blip-toy")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.toy_agreement:
        torch.set_num_threads(args.threads)
        payload = {"benchmark": "onnx-int8-blip-toy", "machine": machine(),
                   "blip_toy_captions": toy_caption_agreement(scratch_dir("vlserve-bench-onnx-toy-"), args.threads)}
        print(payload["blip_toy_captions"])
        print(f"-> {save('onnx-int8-blip-toy-agreement', payload, args.out)}")
        return
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    tmp = Path(tempfile.gettempdir())
    folder = quick_folder(tmp / "vlserve-bench-onnx-quick") if args.quick else random_blip_folder(
        tmp / "vlserve-bench-retrieval-base", "base", COMPONENTS)
    eng = BlipEngine(folder, EngineOptions(attention="sdpa"))
    out = folder / "onnx"
    if missing_exports(folder, out, GRAPHS, "float32"):
        export_graphs(eng.model, folder, GRAPHS, out)
    specs = {g: graph_spec(eng.model, g) for g in GRAPHS}
    device = torch.device("cpu")

    def session(graph, path=None, **options):
        ort = OrtOptions(intra_op_threads=args.threads, **options)
        return OrtGraph(path or out / file_name(graph, "float32"), specs[graph], device, ort)

    variants = {f"ort_{level}": {"optimization": level} for level in LEVELS}
    variants["ort_all_spinning"] = {"optimization": "all", "spinning": True}
    sessions = {g: {name: session(g, **opts) for name, opts in variants.items()} for g in GRAPHS}
    if args.int8:
        for g in GRAPHS:
            sessions[g]["ort_int8"] = session(g, ensure_int8(out / file_name(g, "float32")))

    import transformers

    transformers.logging.set_verbosity_error()
    hf = transformers.BlipForImageTextRetrieval.from_pretrained(folder, dtype=torch.float32).eval()
    size = eng.model.config.vision.image_size
    results, outputs = {}, {}
    for batch in [int(b) for b in args.batches.split(",")]:
        pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        texts = [" ".join(f"w{(i * 7 + j) % 200}" for j in range(args.text_len)) for i in range(batch)]
        ids, mask = eng.tokenizer.encode_batch(texts)
        model = eng.model

        def hf_vision():
            return hf.vision_model(pixel_values=pixels).last_hidden_state

        def hf_text():
            s = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            return F.normalize(hf.text_proj(s[:, 0]), dim=-1)

        runners = {
            "vision": {"torch": lambda: model.encode_images(pixels), "transformers": hf_vision,
                       **{n: (lambda s=s: s({"batch": batch}, pixel_values=pixels)["image_states"])
                          for n, s in sessions["vision"].items()}},
            "text": {"torch": lambda: model.text_embeddings(ids, mask), "transformers": hf_text,
                     **{n: (lambda s=s: s({"batch": batch}, input_ids=ids, attention_mask=mask)["text_embeds"])
                        for n, s in sessions["text"].items()}},
        }
        for graph, fns in runners.items():
            with torch.inference_mode():
                seconds = {n: t["median_s"] for n, t in interleaved(fns, args.repeats).items()}
                outputs[(graph, batch)] = {n: fn() for n, fn in fns.items()}
            per_s = {n: batch / s for n, s in seconds.items()}
            results.setdefault(graph, {})[f"b{batch}"] = {
                "per_s": per_s, "median_s": seconds,
                "ratios": {"ort_all_vs_torch": per_s["ort_all"] / per_s["torch"],
                           "ort_all_vs_transformers": per_s["ort_all"] / per_s["transformers"],
                           "best_ort_vs_torch": max(v for n, v in per_s.items() if n.startswith("ort_"))
                           / per_s["torch"],
                           "torch_vs_transformers": per_s["torch"] / per_s["transformers"]}}
    payload = {"benchmark": "onnx", "config": vars(args), "machine": machine(), "results": results,
               "load_avg_1_5_15": {"before": load_before, "after": os.getloadavg()},
               "ort": {"version": __import__("onnxruntime").__version__, "threads": args.threads,
                       "provider": "CPUExecutionProvider"},
               "target": {"vision_ort_vs_torch": 1.2,
                          "met": all(r["ratios"]["ort_all_vs_torch"] >= 1.2 for r in results["vision"].values())}}
    if args.int8:
        payload["int8"] = accuracy(eng, outputs, args, out)
    name = "onnx-quick" if args.quick else f"onnx-base-cpu-t{args.threads}"
    path = save(name, payload, args.out)
    report(results, payload)
    print(f"-> {path}")


def accuracy(eng, outputs, args, out: Path) -> dict:
    """int8 vs float32 ONNX: ITC embeddings (vision states through vision_proj) and blip-toy captions."""
    drift = {}
    for (graph, batch), o in outputs.items():
        if graph == "vision":
            a, b = eng.image_embeddings(o["ort_all"]), eng.image_embeddings(o["ort_int8"])
        else:
            a, b = o["ort_all"], o["ort_int8"]
        drift[f"{graph}_b{batch}"] = cosine_drift(a, b)
    toy_dir = Path(tempfile.gettempdir()) / "vlserve-bench-onnx-blip-toy"
    return {"itc_cosine_drift": drift, "blip_toy_captions": toy_caption_agreement(toy_dir, args.threads),
            "note": "random weights: drift on trained weights may differ"}


def report(results: dict, payload: dict) -> None:
    for graph, by_batch in results.items():
        for batch, r in by_batch.items():
            cells = "  ".join(f"{n}={v:.2f}" for n, v in r["per_s"].items())
            print(f"{graph:6} {batch:3}  per s: {cells}")
            print(f"{'':10}ratios: " + "  ".join(f"{n}={v:.2f}" for n, v in r["ratios"].items()))
    if "int8" in payload:
        print("int8:", payload["int8"])
    print("load average before/after:", payload["load_avg_1_5_15"], "target met:", payload["target"]["met"])


if __name__ == "__main__":
    main()
