"""BLIP's training losses on one batch: ITC, ITM with hard negatives, captioning LM, VQA answers.

All four read the same image states, so one set of weights learns every task at once.
Beyond BLIP's in-batch negatives, the world's false captions (vlserve.shapes.false_caption) join ITC
as extra texts and ITM as extra negatives: a batch of 64 random scenes rarely holds the
caption with two colours swapped, and those are the pairs ITM must tell apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlserve.families.blip.model import Blip
from vlserve.shapes.training import sincos_2d

LABEL_SMOOTHING = 0.1  # BLIP's captioning loss


class BlipObjectives(nn.Module):
    def __init__(self, model: Blip, temp: float = 0.07):
        super().__init__()
        self.model = model
        self.temp = nn.Parameter(torch.tensor(float(temp)))  # ITC temperature, learned as in BLIP

    def forward(self, batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        m = self.model
        b = batch.pixels.shape[0]
        states = m.encode_images(batch.pixels)  # (B, 1 + N, D)

        # ITC: every image against the batch's captions and the false captions
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        img = m.image_embeddings(states)  # (B, E)
        texts = torch.cat([batch.cap_ids, batch.false_ids])
        masks = torch.cat([batch.cap_mask, batch.false_mask])
        txt = m.text_embeddings(texts, masks)  # (B + B*K, E)
        names = batch.captions + batch.false_captions
        same = torch.tensor([[c == t for t in names] for c in batch.captions])  # (B, B + B*K)
        sim_i2t = img @ txt.T / self.temp
        sim_t2i = txt[:b] @ img.T / self.temp  # (B, B): captions against images
        itc = (_soft_ce(sim_i2t, same) + _soft_ce(sim_t2i, same[:, :b])) / 2

        # ITM: positives, negatives mined from ITC similarity (BLIP), false captions
        with torch.no_grad():
            w_i2t = F.softmax(sim_i2t[:, :b].float(), dim=1).masked_fill(same[:, :b], 0) + 1e-9
            w_t2i = F.softmax(sim_t2i.float(), dim=1).masked_fill(same[:, :b], 0) + 1e-9
            neg_txt = torch.multinomial(w_i2t, 1, generator=generator)[:, 0]
            neg_img = torch.multinomial(w_t2i, 1, generator=generator)[:, 0]
            k = batch.false_ids.shape[0] // b
            false_rows = torch.arange(b) * k  # the first false caption of each image
        pair_states = torch.cat([states, states, states[neg_img], states])
        pair_ids = torch.cat([batch.cap_ids, batch.cap_ids[neg_txt], batch.cap_ids, batch.false_ids[false_rows]])
        pair_mask = torch.cat([batch.cap_mask, batch.cap_mask[neg_txt], batch.cap_mask,
                               batch.false_mask[false_rows]])
        labels = torch.cat([torch.ones(b), torch.zeros(3 * b)]).long()
        itm = F.cross_entropy(m.itm_logits(pair_states, pair_ids, pair_mask), labels)

        # LM: [DEC] caption [SEP], cross-attending the image
        dec = batch.cap_ids.clone()
        dec[:, 0] = m.config.text.bos_token_id
        logits = m.text_decoder(dec, batch.cap_mask, states)
        lm = _next_token_ce(logits, dec, batch.cap_mask, LABEL_SMOOTHING)

        # VQA: the fusion graph encodes the question; the decoder answers, cross-attending it
        q_states = m.fuse(states, batch.q_ids, batch.q_mask)
        logits = m.text_decoder(batch.a_ids, batch.a_mask, q_states, encoder_pad_mask=batch.q_mask == 0)
        vqa = _next_token_ce(logits, batch.a_ids, batch.a_mask, 0.0)
        return {"itc": itc, "itm": itm, "lm": lm, "vqa": vqa}


def _soft_ce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a uniform target over every matching column (equal captions)."""
    target = positive.float() / positive.sum(dim=1, keepdim=True)
    return -(F.log_softmax(logits, dim=1) * target).sum(dim=1).mean()


def _next_token_ce(logits, ids, mask, smoothing: float) -> torch.Tensor:
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, label_smoothing=smoothing)


def init_weights(model: Blip) -> None:
    """BERT/ViT-style init (truncated normal 0.02), 2D sine-cosine patch positions."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    emb = model.vision.embeddings
    grid = math.isqrt(emb.position_embedding.shape[1] - 1)
    with torch.no_grad():
        nn.init.trunc_normal_(emb.class_embedding, std=0.02)
        emb.position_embedding.zero_()
        emb.position_embedding[0, 1:] = sincos_2d(grid, emb.position_embedding.shape[-1])
    model.text_decoder.tie_weights()
