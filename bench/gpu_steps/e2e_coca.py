"""Step e2e_coca: captioning against open_clip's CoCa where its generate works, else vlserve
alone ("reference unavailable")."""

from __future__ import annotations

import json

from .core import Ctx, step
from .timing import compare, dtypes_for, engine_options, params_m, pixel_cache, work_dir


def open_clip_reference(ctx: Ctx, model_cfg: dict, folder):
    """open_clip's CoCa with random weights, saved into `folder` for vlserve to load; None (the
    reason recorded) where it cannot be built."""
    import torch

    ref_dtype = dtypes_for(ctx)[1]
    try:  # open_clip's generate imports transformers' BeamSearchScorer, gone in transformers 5
        import open_clip
        from open_clip.coca_model import CoCa, _has_transformers

        if not _has_transformers:
            why = "open_clip imports, but its generate cannot: transformers lacks what it needs (BeamSearchScorer)"
        else:
            from safetensors.torch import save_file

            ocfg = json.loads(json.dumps(model_cfg))
            ocfg["vision_cfg"]["output_tokens"] = ocfg["text_cfg"]["output_tokens"] = True
            torch.manual_seed(0)
            ref = CoCa(ocfg["embed_dim"], ocfg["multimodal_cfg"], ocfg["text_cfg"], ocfg["vision_cfg"]).eval()
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
                      str(folder / "open_clip_model.safetensors"))
            (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": ocfg}))
            ref = ref.to(ctx.device, ref_dtype)
            ctx.put("reference", {"name": "open_clip", "version": open_clip.__version__, "dtype": str(ref_dtype)})
            return ref
    except ImportError as e:
        why = f"open_clip not importable ({type(e).__name__}: {e})"
    except Exception as e:  # noqa: BLE001 - a broken reference still leaves vlserve to time
        why = f"open_clip's model could not be built: {type(e).__name__}: {e}"[:500]
    ctx.put("reference", {"unavailable": why})
    return None


def open_clip_make(ctx: Ctx, ref, size: int):
    import torch

    ref_px, n = pixel_cache(size, ctx.device, dtypes_for(ctx)[1]), ctx.cfg["tokens"]

    def oc_make(batch, beams):
        px, last = ref_px(batch), {}
        # as bench/coca.py: seq_len counts <start_of_text>; n decoder steps for both
        kind = dict(generation_type="beam_search", num_beams=beams, num_beam_groups=1) if beams > 1 else \
            dict(generation_type="top_k", top_k=1)

        @torch.inference_mode()
        def fn():
            last["out"] = ref.generate(px, seq_len=n + 1, min_seq_len=n, **kind)
        return fn, lambda: [int(last["out"].shape[1]) - 1]
    return oc_make


@step("e2e_coca", 45, 30, 40)
def step_coca(ctx: Ctx) -> None:
    from tests.helpers.tiny_coca import TINY, make_coca_folder
    from vlserve.families.coca.config import ARCHITECTURES
    from vlserve.families.coca.engine import CocaEngine

    arch = "tiny" if ctx.smoke else "coca_ViT-B-32"
    model_cfg = json.loads(json.dumps(TINY if ctx.smoke else ARCHITECTURES[arch]))
    folder = work_dir(f"coca-{arch}")
    ref = open_clip_reference(ctx, model_cfg, folder)
    if ref is None:
        make_coca_folder(folder, cfg=model_cfg)  # vlserve's own modules, open_clip's layout
    eng = CocaEngine(folder, engine_options(ctx))
    ctx.put("vlserve", {"arch": arch, "dtype": str(dtypes_for(ctx)[0]), "attention_backend": eng.backend.name,
                        "params_m": params_m(eng)})
    size = eng.processor.size
    compare(ctx, eng, size, {"open_clip": open_clip_make(ctx, ref, size)} if ref is not None else {})
