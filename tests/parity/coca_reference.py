"""Random open_clip CoCa models, saved in open_clip's layout for vlserve to load, and the
reference decoding loops over open_clip's own forward."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from open_clip.coca_model import CoCa
from safetensors.torch import save_file

SOT, EOT = 49406, 49407

# several shapes, odd ones included: head dims 8 / 12 / 16, image sizes not multiples of 32,
# LayerScale and QuickGELU, with and without the attentional pooler (coca_ViT-* vs coca_base)
CONFIGS = {
    "pow2": {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8,
                            "attentional_pool": True, "attn_pooler_heads": 4, "attn_pooler_queries": 5},
             "text_cfg": {"context_length": 12, "width": 32, "heads": 4, "layers": 2, "embed_cls": True},
             "multimodal_cfg": {"context_length": 12, "width": 32, "heads": 4, "layers": 2}},
    "odd": {"embed_dim": 48, "quick_gelu": True,
            "vision_cfg": {"image_size": 40, "layers": 3, "width": 36, "head_width": 12, "patch_size": 8,
                           "attentional_pool": True, "attn_pooler_heads": 4, "attn_pooler_queries": 9,
                           "ls_init_value": 0.5},
            "text_cfg": {"context_length": 20, "width": 48, "heads": 4, "layers": 2, "embed_cls": True,
                         "ls_init_value": 0.5},
            "multimodal_cfg": {"context_length": 20, "width": 48, "heads": 4, "layers": 3, "ls_init_value": 0.5}},
    "no_pool": {"embed_dim": 24,
                "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
                "text_cfg": {"context_length": 16, "width": 64, "heads": 4, "layers": 1, "embed_cls": True},
                "multimodal_cfg": {"context_length": 16, "width": 64, "heads": 4, "layers": 2}},
}


EOT_BIAS = {"pow2": -0.1, "odd": -1.0, "no_pool": -2.0}


def build(name: str, seed: int = 0) -> CoCa:
    cfg = json.loads(json.dumps(CONFIGS[name]))
    cfg["vision_cfg"]["output_tokens"] = cfg["text_cfg"]["output_tokens"] = True
    torch.manual_seed(seed)
    model = CoCa(cfg["embed_dim"], cfg["multimodal_cfg"], cfg["text_cfg"], cfg["vision_cfg"],
                 quick_gelu=cfg.get("quick_gelu", False)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # re-randomised: open_clip's init (LayerNorms at one, zero biases) would hide bugs
        for n, p in model.named_parameters():
            if n.endswith("weight") and ".ln" in "." + n.split(".", 1)[-1] or n.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() <= 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)
        # sequences end at varied lengths (the sign and size that does it differ per shape)
        model.text_decoder.text_projection[:, EOT] += EOT_BIAS[name]
    model.cfg = cfg
    return model


def save(model: CoCa, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model.cfg}))
    return folder


@torch.no_grad()
def greedy(model: CoCa, pixels: torch.Tensor, steps: int) -> list[list[int]]:
    """Greedy decoding over open_clip's forward, the whole sequence every step (its generate
    does this for sampling), stopping at <end_of_text>."""
    out = torch.full((pixels.shape[0], 1), SOT)
    done = torch.zeros(pixels.shape[0], dtype=torch.bool)
    for _ in range(steps):
        logits = model(pixels, out, output_labels=False)["logits"][:, -1]
        nxt = logits.argmax(-1)
        nxt[done] = EOT
        out = torch.cat([out, nxt[:, None]], 1)
        done |= nxt == EOT
        if done.all():
            break
    return [until_eot(row[1:].tolist()) for row in out]


def until_eot(tokens: list[int]) -> list[int]:
    return tokens[: tokens.index(EOT)] if EOT in tokens else tokens


class RecomputingGraph:
    """A DecoderGraph over open_clip's own forward that keeps no cache: every step runs the
    whole history again, as open_clip's generate does. The shared decode loop over it is
    the reference for vlserve's cached CoCa decoder, with the same decisions (beams,
    penalties), so any difference is the cache's."""

    source_length_dim = 1
    layers, heads, head_dim = 1, 1, 1  # the loop's cache, unused here

    def __init__(self, model: CoCa, max_positions: int):
        self.model, self.eos_id, self.max_positions = model, EOT, max_positions
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def source_tensors(self, states):
        return [states]

    def _logits(self, image_tokens, seqs: list[list[int]]) -> torch.Tensor:
        rows = []
        for tokens, ids in zip(image_tokens, seqs):
            out = self.model(None, torch.tensor([ids]), image_latent=tokens[:1, :1], image_embs=tokens[None],
                             output_labels=False)["logits"]
            rows.append(out[0, -1])
        return torch.stack(rows).float()

    def prefill(self, ids, lengths, cache, sources):
        return self._logits(sources.tensors[0], [row[:n].tolist() for row, n in zip(ids, lengths)])

    def step(self, tokens, positions, cache, sources, history=None):
        row_src = sources.groups[0] if sources.groups is not None else torch.arange(tokens.shape[0])
        image = sources.tensors[0][row_src]
        return self._logits(image, [h[: p + 1].tolist() for h, p in zip(history, positions)])


@torch.no_grad()
def decode_recomputing(model: CoCa, pixels: torch.Tensor, params, prompt: list[int]) -> list[list[int]]:
    """The best sequence per image from the shared loop over RecomputingGraph."""
    from vlserve.engine.family import Source
    from vlserve.engine.generation.loop import generate, make_groups

    _, tokens = model._encode_image(pixels)
    graph = RecomputingGraph(model, model.text.context_length)
    groups = make_groups(graph, [Source(t, t.shape[0]) for t in tokens], [prompt] * len(tokens),
                         [params] * len(tokens))
    return [r[0].tokens for r in generate(graph, groups)]
