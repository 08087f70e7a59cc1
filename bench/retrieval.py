"""Retrieval throughput: vlserve's engine vs transformers' BlipForImageTextRetrieval.

BLIP-base architecture (random weights), CPU by default, same thread count, both in this
run: image ITC embeddings (vision + vision_proj), text ITC embeddings (text + text_proj)
and ITM match probabilities for image-text pairs (vision states given, fusion + itm_head).

    python bench/retrieval.py [--batch 8] [--text-len 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from common import interleaved, machine, random_blip_folder, save

from vlserve.families.blip.engine import BlipEngine, EngineOptions
from vlserve.families.blip.model import Components


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-len", type=int, default=24, help="words per text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.gettempdir()) / f"vlserve-bench-retrieval-{args.arch}"
    random_blip_folder(folder, args.arch, Components(text_encoder=True, text_encoder_cross=True,
                                                     projections=True, itm_head=True))
    eng = BlipEngine(folder, EngineOptions(device=args.device, dtype=args.dtype))
    size = eng.model.config.vision.image_size
    pixels = torch.randn(args.batch, 3, size, size)
    texts = [" ".join(f"w{(i * 7 + j) % 200}" for j in range(args.text_len)) for i in range(args.batch)]
    ids, mask = eng.tokenizer.encode_batch(texts)
    states = eng.encode_images(pixels)

    import transformers

    dtype = getattr(torch, args.dtype)
    hf = transformers.BlipForImageTextRetrieval.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    hf_pixels, hf_states = pixels.to(args.device, dtype), states.to(dtype)
    ids, mask = ids.to(args.device), mask.to(args.device)
    atts = torch.ones(states.shape[:2], dtype=torch.long, device=args.device)

    @torch.inference_mode()
    def hf_image():
        s = hf.vision_model(pixel_values=hf_pixels).last_hidden_state
        F.normalize(hf.vision_proj(s[:, 0]), dim=-1)

    @torch.inference_mode()
    def hf_text():
        s = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        F.normalize(hf.text_proj(s[:, 0]), dim=-1)

    @torch.inference_mode()
    def hf_itm():
        s = hf.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=hf_states,
                            encoder_attention_mask=atts).last_hidden_state
        hf.itm_head(s[:, 0]).softmax(-1)

    cases = {
        "image_embeddings": (lambda: eng.image_embeddings(eng.encode_images(pixels)), hf_image),
        "text_embeddings": (lambda: eng.text_embeddings(texts), hf_text),
        "itm_pairs": (lambda: eng.match(states, texts), hf_itm),
    }
    results = {}
    for name, (ours, theirs) in cases.items():
        both = interleaved({"vlserve": ours, "transformers": theirs}, args.repeats)
        o, t = both["vlserve"], both["transformers"]
        results[name] = {"vlserve_s": o["median_s"], "transformers_s": t["median_s"],
                         "vlserve_per_s": args.batch / o["median_s"], "transformers_per_s": args.batch / t["median_s"],
                         "speedup": t["median_s"] / o["median_s"]}
    payload = {"benchmark": "retrieval", "config": vars(args), "attention_backend": eng.backend.name,
               "machine": machine(), "results": results}
    path = save(f"retrieval-{args.arch}-{args.device}-{args.dtype}-b{args.batch}", payload, args.out)
    print(f"{'':18}{'vlserve/s':>11}{'transformers/s':>16}{'speed-up':>10}")
    for name, r in results.items():
        print(f"{name:18}{r['vlserve_per_s']:11.2f}{r['transformers_per_s']:16.2f}{r['speedup']:9.2f}x")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
