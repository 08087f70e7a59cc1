"""Step e2e_beit3: captioning against unilm's BEiT-3 (beit3-gml on torchscale, built by
bench/beit3_vs_unilm.py) where importable, else vlserve alone ("reference unavailable")."""

from __future__ import annotations

from pathlib import Path

from .core import Ctx, load_bench, step
from .timing import compare, dtypes_for, engine_options, params_m, pixel_cache


def unilm_reference(ctx: Ctx, root: Path, spm):
    """(bench/beit3_vs_unilm, its folder, the model) or None (the reason recorded)."""
    try:  # unilm's classes (beit3-gml on torchscale): bench/beit3_vs_unilm.py builds them
        import beit3  # noqa: F401

        load_bench("common")
        unilm = load_bench("beit3_vs_unilm")
    except ImportError as e:
        why = f"unilm's beit3 not importable ({type(e).__name__}: {e})"
    else:
        try:  # unilm's registered model: BEiT-3-base captioning at 480 px, also in the smoke run
            folder, ref = unilm.folder_for("caption", root, spm)
            ref = ref.to(ctx.device, dtypes_for(ctx)[1])
            ctx.put("reference", {"name": "unilm beit3 CaptioningHandler", "dtype": str(dtypes_for(ctx)[1])})
            return unilm, folder, ref
        except Exception as e:  # noqa: BLE001 - a broken reference still leaves vlserve to time
            why = f"unilm's model could not be built: {type(e).__name__}: {e}"[:500]
    ctx.put("reference", {"unavailable": why})
    return None


def unilm_make(ctx: Ctx, unilm, ref, eng, size: int):
    import torch

    ref_px, n = pixel_cache(size, ctx.device, dtypes_for(ctx)[1]), ctx.cfg["tokens"]

    def un_make(batch, beams):
        px = ref_px(batch)
        handler = unilm.unilm_captioner(ref, eng.tokenizer.mask_id, beams, n)
        ids = torch.arange(batch)

        @torch.inference_mode()
        def fn():
            handler.predictions.clear()
            handler.eval_batch(ref, px, image_id=ids)
        return fn, lambda: sorted({int(p["caption"]) for p in handler.predictions})
    return un_make


@step("e2e_beit3", 60, 35, 45)
def step_beit3(ctx: Ctx) -> None:
    import dataclasses

    from tests.helpers.tiny_beit3 import TINY, make_beit3_folder, train_spm
    from vlserve.families.beit3.config import Beit3Config
    from vlserve.families.beit3.engine import Beit3Engine, Beit3Options

    root = load_bench("common").scratch_dir("gpu-suite-beit3-")
    spm = train_spm(root / "beit3.spm")
    reference = unilm_reference(ctx, root, spm)
    if reference is not None:
        unilm, folder, ref = reference
        heads = None
    else:
        if ctx.smoke:
            bcfg = dataclasses.replace(TINY, retrieval=False, answers=0, caption=True, vocab_size=64010)
        else:  # unilm's beit3_base_patch16_480_captioning
            bcfg = Beit3Config(image_size=480, caption=True, vocab_size=64010)
        folder = make_beit3_folder(root / "caption", cfg=bcfg, spm=spm)
        heads = bcfg.heads
    eng = Beit3Engine(folder, engine_options(ctx), Beit3Options(heads=heads))
    ctx.put("vlserve", {"dtype": str(dtypes_for(ctx)[0]), "attention_backend": eng.backend.name,
                        "image_size": eng.model.config.image_size, "params_m": params_m(eng)})
    size = eng.model.config.image_size
    compare(ctx, eng, size, {"unilm": unilm_make(ctx, unilm, ref, eng, size)} if reference is not None else {})
