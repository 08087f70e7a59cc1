"""Steps e2e_blip_base, e2e_blip_large: captioning with random weights, vlserve (bf16) vs
transformers generate (fp16)."""

from __future__ import annotations

import time

from .core import Ctx, load_bench, step
from .timing import compare, dtypes_for, engine_options, params_m, pixel_cache, work_dir


def tiny_blip_config(layers: int):
    from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig

    vision = VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                          image_size=32, patch_size=8)
    text = TextConfig(hidden_size=64, encoder_hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4)
    return BlipConfig(vision=vision, text=text)


def transformers_reference(ctx: Ctx, folder, size: int) -> dict:
    """{"transformers": make} for `compare`, or {} (the reason recorded) where it cannot load."""
    import torch

    ref_dtype = dtypes_for(ctx)[1]
    try:
        import transformers

        t0 = time.perf_counter()
        hf = transformers.BlipForConditionalGeneration.from_pretrained(folder, dtype=ref_dtype).to(ctx.device).eval()
        hf_pixels = pixel_cache(size, ctx.device, ref_dtype)
        n = ctx.cfg["tokens"]

        def hf_make(batch, beams):
            px, last = hf_pixels(batch), {}

            @torch.inference_mode()
            def fn():
                last["out"] = hf.generate(pixel_values=px, max_new_tokens=n, min_new_tokens=n, num_beams=beams,
                                          do_sample=False)
            # BLIP's generate starts from [BOS] alone here: every new token is generated
            return fn, lambda: [int(last["out"].shape[1]) - 1]
        ctx.put("reference", {"name": "transformers", "version": transformers.__version__, "dtype": str(ref_dtype),
                              "attn_implementation": getattr(hf.config, "_attn_implementation", None),
                              "setup_s": time.perf_counter() - t0})
        return {"transformers": hf_make}
    except Exception as e:  # noqa: BLE001
        ctx.put("reference", {"unavailable": f"{type(e).__name__}: {e}"[:500]})
        return {}


def run_blip(ctx: Ctx, arch: str) -> None:
    random_blip_folder = load_bench("common").random_blip_folder
    from vlserve.families.blip.engine import BlipEngine, BlipOptions
    from vlserve.families.blip.model import Components

    cfg = ctx.cfg
    t0 = time.perf_counter()
    config = tiny_blip_config(2 if arch == "base" else 3) if ctx.smoke else None
    folder = random_blip_folder(work_dir(f"blip-{arch}-{ctx.mode}"), arch, Components(text_decoder=True),
                                config=config)
    eng = BlipEngine(folder, engine_options(ctx), BlipOptions())
    ctx.put("vlserve", {"dtype": str(dtypes_for(ctx)[0]), "attention_backend": eng.backend.name,
                        "cross_attention": eng.cross_mode, "setup_s": time.perf_counter() - t0,
                        "params_m": params_m(eng)})
    size = eng.model.config.vision.image_size
    extra = [(1, cfg["big_batch"], "vlserve")] if cfg["big_batch"] else []
    refs = transformers_reference(ctx, folder, size)
    compare(ctx, eng, size, refs, max_batch=max(max(cfg["batches"]), cfg["big_batch"]), extra=extra)


@step("e2e_blip_base", 80, 45, 45)
def step_blip_base(ctx: Ctx) -> None:
    run_blip(ctx, "base")


@step("e2e_blip_large", 95, 50, 45)
def step_blip_large(ctx: Ctx) -> None:
    run_blip(ctx, "large")
