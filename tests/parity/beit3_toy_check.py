"""The shipped beit3-toy as unilm's own classes load it (unilm's `model` key, strict but for
the other tasks' heads), against vlserve's outputs for the same inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from beit3.modeling_finetune import BEiT3ForCaptioning, BEiT3ForRetrieval, BEiT3ForVisualQuestionAnswering
from torchscale.architecture.config import EncoderConfig
from transformers import XLMRobertaTokenizer

from vlserve import load_model

QUESTIONS = ["what color is the circle?", "how many shapes are there?"]
CAPTIONS = ["a small red square", "a large blue circle above a small green triangle"]
HEADS = {BEiT3ForRetrieval: ("vision_head.", "language_head.", "logit_scale"),
         BEiT3ForVisualQuestionAnswering: ("pooler.", "head."), BEiT3ForCaptioning: ("mlm_head.",)}


def unilm(cls, folder: Path, engine, **kw):
    """One of unilm's classes built for the toy's sizes, loaded from beit3.pth in fp32."""
    cfg = engine.model.config
    model = cls(EncoderConfig(**cfg.to_encoder_config()), **kw).eval()
    state = torch.load(folder / "beit3.pth", map_location="cpu", weights_only=True)["model"]
    mine = {k: v.float() for k, v in state.items() if k.startswith("beit3.") or k.startswith(HEADS[cls])}
    missing, unexpected = model.load_state_dict(mine, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def check_toy(folder: Path, atol: float) -> None:
    served = load_model(folder)
    eng = served.engine
    hf = XLMRobertaTokenizer(str(folder / "beit3.spm"))
    px = torch.randn((2, 3, eng.model.config.image_size, eng.model.config.image_size),
                     generator=torch.Generator().manual_seed(6))
    states = eng.encode_images(px)

    def text(texts):
        rows = [[0] + hf.convert_tokens_to_ids(hf.tokenize(t)) + [2] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
        return ids, (ids == 1).long()

    with torch.no_grad():
        ref = unilm(BEiT3ForRetrieval, folder, eng)
        img, _ = ref(image=px, only_infer=True)
        _, txt = ref(text_description=text(CAPTIONS)[0], padding_mask=text(CAPTIONS)[1], only_infer=True)
        vqa = unilm(BEiT3ForVisualQuestionAnswering, folder, eng, num_classes=len(eng.answers))
        logits = vqa(image=px, question=text(QUESTIONS)[0], padding_mask=text(QUESTIONS)[1])
        cap = unilm(BEiT3ForCaptioning, folder, eng)
        cur = torch.tensor([[0, eng.tokenizer.mask_id]] * 2)
        next_logits, _ = cap(image=px, text_ids=cur, padding_mask=torch.zeros_like(cur), language_masked_pos=None)
    torch.testing.assert_close(eng.image_embeddings(states), img, atol=atol, rtol=0)
    torch.testing.assert_close(eng.text_embeddings(CAPTIONS), txt, atol=atol, rtol=0)
    torch.testing.assert_close(eng.classify(states, QUESTIONS), torch.sigmoid(logits), atol=atol, rtol=0)
    from vlserve.engine.generation.batch import DecodeBatch

    first = DecodeBatch(eng.caption_decoder).prefill(states, [states.shape[1]] * 2, [[0], [0]], max_len=4)
    torch.testing.assert_close(first, next_logits[:, -1], atol=atol, rtol=0)
