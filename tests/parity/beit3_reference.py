"""Random unilm BEiT-3 models (torchscale 0.3 + beit3-gml 0.1.3's classes), saved in unilm's
checkpoint layout for vlserve to load, and reference decoding loops over unilm's own
BEiT3ForCaptioning forward."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch

with warnings.catch_warnings():  # beit3-gml imports timm's deprecated paths
    warnings.simplefilter("ignore", FutureWarning)
    from beit3.modeling_finetune import (BEiT3ForCaptioning, BEiT3ForRetrieval,
                                         BEiT3ForVisualQuestionAnswering)
from torchscale.architecture.config import EncoderConfig
from torchscale.model.BEiT3 import BEiT3

from tests.helpers.tiny_beit3 import randomise
from vlserve.families.beit3.config import Beit3Config
from vlserve.families.beit3.tokenizer import BOS, EOS

# several shapes, odd ones included: head dims 8 / 16 / 12, grids of 4, 5 and 3 patches,
# sub-LN off in one, a LayerNorm eps other than torch's
CONFIGS = {
    "pow2": Beit3Config(width=32, heads=4, layers=2, ffn=64, image_size=32, patch_size=8, text_positions=40),
    "odd": Beit3Config(width=48, heads=3, layers=3, ffn=80, image_size=40, patch_size=8, text_positions=30,
                       eps=1e-6),
    "no_subln": Beit3Config(width=36, heads=3, layers=2, ffn=72, image_size=48, patch_size=16, text_positions=34,
                            subln=False),
}
KINDS = ("retrieval", "vqa", "caption")
EOS_BIAS = {"pow2": 2.0, "odd": 3.0, "no_subln": 1.5}  # captions end at varied lengths (found per shape)
ANSWERS = ("yes", "no", "red", "blue", "two", "circle", "left")


def encoder_config(cfg: Beit3Config, vocab: int, normalize_output: bool = True) -> EncoderConfig:
    kw = dataclasses.replace(cfg, vocab_size=vocab, normalize_output=normalize_output).to_encoder_config()
    return EncoderConfig(**kw)


def build(kind: str, cfg: Beit3Config, vocab: int, seed: int = 0, eos_bias: float = 0.0) -> torch.nn.Module:
    """unilm's class for the task (VQA without the encoder's final LayerNorm, as unilm's
    vqav2 models are registered), every parameter re-randomised."""
    torch.manual_seed(seed)
    if kind == "retrieval":
        model = BEiT3ForRetrieval(encoder_config(cfg, vocab))
    elif kind == "vqa":
        model = BEiT3ForVisualQuestionAnswering(encoder_config(cfg, vocab, normalize_output=False),
                                                num_classes=len(ANSWERS))
    else:
        model = BEiT3ForCaptioning(encoder_config(cfg, vocab))
    randomise(model, seed + 1)
    if kind == "caption":
        with torch.no_grad():
            model.mlm_head.bias[EOS] += eos_bias
    return model.eval()


def backbone(cfg: Beit3Config, vocab: int, seed: int = 0, normalize_output: bool = True) -> BEiT3:
    torch.manual_seed(seed)
    model = BEiT3(encoder_config(cfg, vocab, normalize_output))
    randomise(model, seed + 1)
    return model.eval()


def save(model: torch.nn.Module, folder: Path, spm: Path, heads: int, key: str = "model") -> Path:
    """unilm's layout: a .pth with the state dict under `model` (or `module`), beit3.spm,
    answer2label.txt for VQA; model.toml names the head count the weights cannot tell."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({key: model.state_dict(), "args": __import__("argparse").Namespace(task="test")},
               folder / "checkpoint-best.pth")
    (folder / "beit3.spm").write_bytes(spm.read_bytes())
    if isinstance(model, BEiT3ForVisualQuestionAnswering):
        (folder / "answer2label.txt").write_text(
            "".join(json.dumps({"answer": a, "label": i}) + "\n" for i, a in enumerate(ANSWERS)))
    (folder / "model.toml").write_text(f'family = "beit3"\n[beit3]\nheads = {heads}\n')
    return folder


@torch.no_grad()
def greedy(model: BEiT3ForCaptioning, pixels: torch.Tensor, steps: int, mask_id: int,
           incremental: bool) -> list[list[int]]:
    """Greedy captions over unilm's forward, one image at a time: with `incremental`, as
    unilm's CaptioningHandler decodes (the image only in the first step, [token, MASK] after
    it, the mask's cached keys dropped after every step); without, the whole text again."""
    out = []
    for image in pixels:
        image = image[None]
        ids, state = [BOS], {}
        for step in range(steps):
            if incremental:
                cur = torch.tensor([[ids[-1], mask_id]])
                logits, state = model(image=image if step == 0 else None, text_ids=cur,
                                      padding_mask=torch.zeros_like(cur), language_masked_pos=None,
                                      text_len=len(ids) + 1, incremental_state=state)
                for layer in state.values():
                    for name in layer:
                        layer[name] = layer[name][:, :, :-1]
            else:
                cur = torch.tensor([ids + [mask_id]])
                logits, _ = model(image=image, text_ids=cur, padding_mask=torch.zeros_like(cur),
                                  language_masked_pos=None)
            nxt = int(logits[0, -1].argmax())
            if nxt == EOS:
                break
            ids.append(nxt)
        out.append(ids[1:])
    return out


class RecomputingGraph:
    """A DecoderGraph over unilm's forward keeping no cache: every step runs the image and the
    whole text + [MASK] again. The shared decode loop over it is the reference for vlserve's
    cached decoder with the same decisions (beams, penalties): any difference is the cache's."""

    source_length_dim = 1
    layers, heads, head_dim = 1, 1, 1  # the loop's cache, unused here

    def __init__(self, model: BEiT3ForCaptioning, mask_id: int, max_positions: int, size: int):
        self.model, self.mask_id, self.eos_id, self.max_positions = model, mask_id, EOS, max_positions
        self.device, self.dtype, self.size = torch.device("cpu"), torch.float32, size

    def source_tensors(self, states):
        return [states]

    def _logits(self, images, seqs: list[list[int]]) -> torch.Tensor:
        rows = []
        for image, ids in zip(images, seqs):  # image: pixels flattened to (S*S, 3)
            cur = torch.tensor([ids + [self.mask_id]])
            image = image.transpose(0, 1).reshape(1, 3, self.size, self.size)
            logits, _ = self.model(image=image, text_ids=cur, padding_mask=torch.zeros_like(cur),
                                   language_masked_pos=None)
            rows.append(logits[0, -1])
        return torch.stack(rows).float()

    def prefill(self, ids, lengths, cache, sources):
        return self._logits(sources.tensors[0], [row[:n].tolist() for row, n in zip(ids, lengths)])

    def step(self, tokens, positions, cache, sources, history=None):
        row_src = sources.groups[0] if sources.groups is not None else torch.arange(tokens.shape[0])
        return self._logits(sources.tensors[0][row_src], [h[: p + 1].tolist() for h, p in zip(history, positions)])


@torch.no_grad()
def decode_recomputing(model: BEiT3ForCaptioning, pixels: torch.Tensor, params, prompt: list[int],
                       mask_id: int, max_positions: int) -> list[list[int]]:
    """The best sequence per image from the shared loop over RecomputingGraph (sources: the
    pixels themselves, flattened so the loop can pad and index them)."""
    from vlserve.engine.family import Source
    from vlserve.engine.generation.loop import generate, make_groups

    graph = RecomputingGraph(model, mask_id, max_positions, pixels.shape[-1])
    flat = pixels.reshape(pixels.shape[0], 3, -1).transpose(1, 2)  # (B, S*S, 3) for the loop's (Lk, Dw)
    groups = make_groups(graph, [Source(t, t.shape[0]) for t in flat], [prompt] * len(flat), [params] * len(flat))
    return [r[0].tokens for r in generate(graph, groups)]
