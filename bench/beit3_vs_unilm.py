"""BEiT-3: vlserve's engine vs unilm's own classes (beit3-gml 0.1.3 on torchscale 0.3), in
the same run (run it in .venv-ref, which has them: `.venv-ref/bin/python bench/beit3_vs_unilm.py`).

BEiT-3-base with unilm's random initialisation (speed needs no training), CPU fp32, both
with the same threads, each task at the size unilm fine-tunes it:
- retrieval (384 px), batch 8: `image_embeddings(encode_images)` and `text_embeddings` vs
  BEiT3ForRetrieval(image=...) / (text_description=...), given the same ids padded to the
  longest text, and padded to 64 as unilm's data pipeline pads them;
- VQA (480 px, 3129 answers), batch 8: `classify` vs BEiT3ForVisualQuestionAnswering;
- captioning (480 px), batch 8, N new tokens, greedy and 3 beams: vlserve's decode loop
  (the image prefix once per image, shared by its beams) vs unilm's own CaptioningHandler
  .eval_batch, its beam search over `incremental_state` (beams = 1 for greedy), which runs
  the image once per beam and copies the caches every step.

    .venv-ref/bin/python bench/beit3_vs_unilm.py [--batch 8] [--tokens 20] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import types
import warnings
from pathlib import Path

import torch

from common import ROOT, interleaved, machine, parse_run_args, save, scratch_dir

sys.path.insert(0, str(ROOT))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import beit3
    from beit3 import modeling_finetune as unilm

    sys.path.append(str(Path(beit3.__file__).parent))  # unilm's scripts import their siblings top-level
    # its datasets module imports OpenCV for training augmentation; the handler only takes its
    # tokenizer factory from there, which this benchmark replaces anyway (_Ids)
    sys.modules["datasets"] = types.SimpleNamespace(get_sentencepiece_model_for_beit3=None)
    from beit3.engine_for_finetuning import CaptioningHandler
    del sys.modules["datasets"]

from tests.helpers.tiny_beit3 import train_spm  # noqa: E402
from vlserve.engine.generation.params import GenerationParams  # noqa: E402
from vlserve.families.beit3.engine import Beit3Engine  # noqa: E402
from vlserve.scheduling.runner import DirectRunner  # noqa: E402
from vlserve.tasks.caption import caption  # noqa: E402
from vlserve.tasks.models import TaskModel  # noqa: E402

TEXTS = ["a small red square left of a large blue circle", "what color is the large shape",
         "is there a green triangle", "two circles"] * 2
MODELS = {"retrieval": unilm.beit3_base_patch16_384_retrieval, "vqa": unilm.beit3_base_patch16_480_vqav2,
          "caption": unilm.beit3_base_patch16_480_captioning}


def folder_for(task: str, root: Path, spm: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    ref = MODELS[task]().eval()
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ref.state_dict()}, folder / "checkpoint.pth")
    (folder / "beit3.spm").write_bytes(spm.read_bytes())
    if task == "vqa":
        n = ref.head[3].out_features
        (folder / "answer2label.txt").write_text("".join(json.dumps({"answer": f"a{i}", "label": i}) + "\n"
                                                         for i in range(n)))
    return folder, ref


class _Ids:
    """What CaptioningHandler reads from its XLM-R tokenizer: the special ids; captions come
    back as their token counts (a random model's ids are not text)."""

    def __init__(self, mask_id: int):
        self.mask_token_id, self.cls_token_id, self.pad_token_id, self.sep_token_id = mask_id, 0, 1, 2

    def batch_decode(self, rows, skip_special_tokens=True):
        return [str(int((r > 2).sum())) for r in rows]


def unilm_captioner(ref, mask_id: int, beams: int, tokens: int) -> CaptioningHandler:
    handler = CaptioningHandler.__new__(CaptioningHandler)  # its __init__ wants the training args
    handler.predictions, handler.tokenizer = [], _Ids(mask_id)
    handler.num_beams, handler.max_len, handler.length_penalty = beams, tokens + 1, 0.6
    handler.vocab_size = ref.mlm_head.out_features
    return handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="retrieval,vqa,caption")
    args = parse_run_args(ap)
    root = scratch_dir("vlserve-bench-beit3-")
    spm = train_spm(root / "beit3.spm")
    texts = TEXTS[: args.batch]
    results, lengths = {}, {}
    for task in args.tasks.split(","):
        folder, ref = folder_for(task, root, spm)
        eng = Beit3Engine(folder)
        size = eng.model.config.image_size
        pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
        ids, pad = eng._text(texts)
        with torch.inference_mode():
            if task == "retrieval":
                results["image_embeddings"] = interleaved(
                    {"vlserve": lambda: eng.image_embeddings(eng.encode_images(pixels)),
                     "unilm": lambda: ref(image=pixels, only_infer=True)}, args.repeats)
                # unilm given vlserve's ids (padded to the longest text), and as its own data
                # pipeline feeds it (every text padded to num_max_bpe_tokens = 64)
                ids64 = torch.nn.functional.pad(ids, (0, 64 - ids.shape[1]), value=1)
                for case, (i, p) in (("text_embeddings", (ids, pad)), ("text_embeddings_unilm_pad64",
                                                                      (ids64, ids64 == 1))):
                    results[case] = interleaved(
                        {"vlserve": lambda: eng.text_embeddings(texts),
                         "unilm": lambda i=i, p=p: ref(text_description=i, padding_mask=p.long(), only_infer=True)},
                        args.repeats * 3)
            elif task == "vqa":
                results["vqa"] = interleaved(
                    {"vlserve": lambda: eng.classify(eng.encode_images(pixels), texts),
                     "unilm": lambda: ref(image=pixels, question=ids, padding_mask=pad.long())}, args.repeats)
            else:
                model = TaskModel("bench", DirectRunner(eng), eng.capabilities)
                n = args.tokens
                for name, beams in (("greedy", 1), ("beams3", 3)):
                    params = GenerationParams(max_new_tokens=n, min_new_tokens=n, num_beams=beams, length_penalty=0.6)
                    handler = unilm_captioner(ref, eng.tokenizer.mask_id, beams, n)
                    results[f"caption_{name}"] = interleaved(
                        {"vlserve": lambda p=params: asyncio.run(caption(model, pixels, params=p)),
                         "unilm": lambda h=handler: h.eval_batch(ref, pixels, image_id=torch.arange(args.batch))},
                        args.repeats)
                    lengths[name] = sorted({int(p["caption"]) for p in handler.predictions})
    table = {}
    for case, r in results.items():
        o, t = r["vlserve"]["median_s"], r["unilm"]["median_s"]
        table[case] = {"vlserve_s": o, "unilm_s": t, "speedup": t / o, "vlserve_items_per_s": args.batch / o,
                       "unilm_items_per_s": args.batch / t}
    payload = {"benchmark": "beit3", "config": vars(args), "architecture": "BEiT-3 base (unilm's registered models)",
               "unilm_caption_lengths": lengths,
               "machine": machine() | {"torchscale": "0.3.0", "beit3-gml": "0.1.3"}, "results": table, "runs": results}
    path = save(f"beit3-base-cpu-b{args.batch}-t{args.tokens}", payload, args.out)
    print(f"{'':18}{'vlserve s':>11}{'unilm s':>10}{'speed-up':>10}")
    for case, r in table.items():
        print(f"{case:18}{r['vlserve_s']:11.3f}{r['unilm_s']:10.3f}{r['speedup']:9.2f}x")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
