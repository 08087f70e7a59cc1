"""Train coca-toy: a small CoCa learning the contrastive and captioning losses jointly on the
shapes world, saved in open_clip's layout (open_clip itself loads it).

    nice -n 15 .venv/bin/python model_repo/coca-toy/train.py --workdir /tmp/coca-toy-run

Seeded and resumable, as blip-toy's train.py: the state goes to --workdir every
--ckpt-every steps and a rerun with the same --workdir continues; scenes are drawn per step
from the seed (seeds >= 1,000,000, never the evaluation's). The shipped weights are the
moving average of the trained ones, in float16.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent

from evaluate import evaluate  # noqa: E402  (this folder: the script's own)

from vlserve.engine.images import CropProcessor  # noqa: E402
from vlserve.families.coca.config import CocaConfig, MultimodalConfig, TextConfig, VisionConfig  # noqa: E402
from vlserve.families.coca.loader import save_coca  # noqa: E402
from vlserve.families.coca.text import Coca  # noqa: E402
from vlserve.families.coca.tokenizer import ClipTokenizer  # noqa: E402
from vlserve.shapes import false_caption, render, sample_scene  # noqa: E402
from vlserve.shapes.evaluation import validate  # noqa: E402
from vlserve.shapes.training import Ema, adamw, add_run_args, resume, sincos_2d, start, train  # noqa: E402
from vlserve.shapes.world import CAPTION_WORDS  # noqa: E402

TRAIN_SEED_BASE = 1_000_000
CONTEXT = 20  # <start_of_text> + at most 10 words + <end_of_text>, with room


def make_config(args) -> CocaConfig:
    w = args.width
    return CocaConfig(
        embed_dim=w,
        vision=VisionConfig(image_size=args.image_size, patch_size=args.patch_size, width=w, layers=args.vision_layers,
                            head_width=32, attentional_pool=args.queries > 0, attn_pooler_queries=args.queries + 1,
                            attn_pooler_heads=w // 32),
        text=TextConfig(context_length=CONTEXT, vocab_size=49408, width=w, heads=w // 32, layers=args.text_layers,
                        embed_cls=True),
        multimodal=MultimodalConfig(context_length=CONTEXT, vocab_size=49408, width=w, heads=w // 32,
                                    layers=args.decoder_layers))


@torch.no_grad()
def init_weights(model: Coca, seed: int) -> None:
    """open_clip's initialisation scales (normal; LayerNorm at one; biases at zero), and 2-D
    sine-cosine patch positions (learned from there), as the other toys: with open_clip's random
    ones a first run learned single shapes but not "left of" / "above" (two-object captions
    stuck near 25% from step 1,500 to 4,000)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 0:  # logit_scale, set below
            continue
        if p.dim() == 1 and ("ln" in name or "gamma" in name) and name.endswith(("weight", "gamma")):
            p.fill_(1.0)
        elif p.dim() == 1 or name.endswith("bias"):
            p.zero_() if "emb" not in name else p.normal_(0, 0.01, generator=g)
        elif "embedding" in name or name.endswith("query"):
            p.normal_(0, 0.02, generator=g)
        elif p.dim() == 4:  # the patch convolution: fan-in is 3 x patch x patch (16 alone gave 7x the scale)
            p.normal_(0, p[0].numel() ** -0.5, generator=g)
        else:
            p.normal_(0, p.shape[-1] ** -0.5, generator=g)
    v = model.visual.positional_embedding  # row 0 is the class token's
    v[0].zero_()
    v[1:] = sincos_2d(model.config.vision.grid, v.shape[1])
    model.logit_scale.fill_(torch.log(torch.tensor(1 / 0.07)))


def make_batch(step: int, seed: int, size: int, tok: ClipTokenizer, processor: CropProcessor, two_prob: float,
               negatives: int):
    rng = random.Random(TRAIN_SEED_BASE * (seed + 1) + step)
    scenes = [sample_scene(rng, two_prob) for _ in range(size)]
    captions = [s.caption for s in scenes]
    false = [false_caption(s, rng) for s in scenes for _ in range(negatives)]
    return processor([render(s) for s in scenes]), tok.encode_batch(captions), tok.encode_batch(false)


def world_token_ids(tok: ClipTokenizer) -> torch.Tensor:
    """The ids a caption can hold after <start_of_text>: the world's words and <end_of_text>
    (CLIP's BPE splits at spaces, so a word's tokens do not depend on its neighbours)."""
    return torch.tensor(sorted(set(tok.encode_batch([" ".join(CAPTION_WORDS)])[0].tolist()[1:]) - {tok.pad_id}))


def world_caption_loss(states, targets, projection, used, pad_id: int, smoothing: float) -> torch.Tensor:
    """Cross-entropy over the whole vocabulary, with label smoothing, as F.cross_entropy gives
    it, for a projection whose columns outside `used` are zero: those logits are exactly 0, so
    they enter the log-sum-exp as one term log(V - U). The (N, V) logits are never formed:
    49,408 columns made most of a step's time. The zero columns get no gradient and stay
    zero (weight decay keeps zero at zero)."""
    vocab = projection.shape[1]
    keep = targets != pad_id
    z = states[keep] @ projection[:, used]  # (N, U)
    index = torch.searchsorted(used, targets[keep])
    rest = z.new_full((z.shape[0], 1), math.log(vocab - used.numel()))
    lse = torch.logsumexp(torch.cat([z, rest], 1), 1)
    nll = lse - z.gather(1, index[:, None]).squeeze(1)
    uniform = lse - z.sum(1) / vocab  # mean over the V classes of -log p
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def losses(model: Coca, pixels, ids, false_ids, pad_id: int, smoothing: float,
           used: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """CoCa's two losses: contrastive (images against their captions and the near-miss false
    ones) and captioning (teacher-forced next token, padding ignored). With `used`, the
    captioning loss is world_caption_loss (the same value for this model, see there)."""
    latent, tokens = model.visual(pixels)
    img = F.normalize(latent, dim=-1)
    txt = F.normalize(model.text(torch.cat([ids, false_ids])), dim=-1)
    b = ids.shape[0]
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B + B*K)
    target = torch.arange(b)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :b].T, target)) / 2
    d = model.text_decoder
    states = d.ln_final(model.decoder_states(tokens, ids[:, :-1]))  # (B, L - 1, D)
    if used is not None:
        caption = world_caption_loss(states, ids[:, 1:], d.text_projection, used, pad_id, smoothing)
    else:
        out = states @ d.text_projection
        caption = F.cross_entropy(out.reshape(-1, out.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=pad_id,
                                  label_smoothing=smoothing)
    return {"contrastive": contrastive, "caption": 2.0 * caption}  # CoCa's weights: 1 and 2


def export(model: Coca, folder: Path) -> Path:
    copy = Coca(model.config)
    copy.load_state_dict(model.state_dict())
    return save_coca(copy.half(), folder, {"size": model.config.vision.image_size, "resize_mode": "shortest",
                                            "interpolation": "bicubic"})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, workdir=Path("/tmp/coca-toy-run"), out=HERE, steps=6000)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--decoder-layers", type=int, default=3)
    p.add_argument("--queries", type=int, default=0,
                   help="decoder tokens from the attentional pooler (open_clip's coca_ViT-*: 256 for 49 patches); "
                        "0: no pooler, the decoder reads every patch token and the contrastive embedding is the "
                        "class token's (open_clip's coca_base), as blip-toy's decoder reads every patch. With 32 "
                        "pooled tokens for 64 patches the captions missed left-of vs above in half the two-object "
                        "scenes")
    p.add_argument("--full-vocab-loss", action="store_true",
                   help="train every column of the vocabulary projection (slower: 49,408 logits per token); "
                        "by default the columns no caption uses are zero and the loss skips them exactly")
    args = p.parse_args(argv)

    tuner = start(args)
    config = make_config(args)
    model = Coca(config)
    init_weights(model, args.seed)
    tok = ClipTokenizer(CONTEXT)
    used = None if args.full_vocab_loss else world_token_ids(tok)
    if used is not None:
        with torch.no_grad():
            keep = model.text_decoder.text_projection[:, used].clone()
            model.text_decoder.text_projection.zero_()[:, used] = keep
    ema = Ema(model, args.ema)
    opt = adamw(model, args, embeddings="embedding")
    processor = CropProcessor(size=config.vision.image_size)
    step, spent, _ = resume(args, model, opt, ema)
    vocab_params = 2 * config.text.vocab_size * config.text.width
    n_params = sum(t.numel() for t in model.state_dict().values())
    print(f"params {n_params / 1e6:.2f}M ({(n_params - vocab_params) / 1e6:.2f}M without the two vocabulary "
          f"matrices); {json.dumps(vars(args), default=str)}", flush=True)

    def losses_at(step: int) -> dict:
        batch = make_batch(step, args.seed, args.batch, tok, processor, args.two_prob, args.negatives)
        return losses(model, *batch, tok.pad_id, args.smoothing, used)

    train(args, model, opt, ema, tuner, step, spent, losses_at,
          validate=lambda folder: validate(evaluate, folder, args.val_n), export=lambda m, folder: export(m, folder),
          log_fields=lambda: {"scale": round(model.logit_scale.detach().exp().item(), 2)})


if __name__ == "__main__":
    main()
