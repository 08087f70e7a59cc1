"""beit3-toy's three losses on one batch, all through one Multiway backbone:

contrastive   vision mode (images) against text mode (their captions and near-miss false
              ones), unilm's retrieval objective with a learned temperature
vqa           fusion mode over image and question, unilm's classifier with binary
              cross-entropy (VQA's soft scores; here every answer is exact, so one-hot)
caption       next token at a [MASK], as decoding asks for it (decoder.py): the caption's
              tokens attend to the image and causally to each other, and a [MASK] at every
              text position j attends to the image, the true tokens before j and itself,
              so every token of the caption is predicted from its true prefix in one pass.
              (unilm masks a random 60% of the tokens instead; the decoding is the same.)

The image's keys and values for the caption come from the vision pass itself: image tokens
never attend to text in captioning, so the vision mode computes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlserve.families.beit3.model import Beit3Model

SMOOTHING = 0.1


def vision_with_kv(model: Beit3Model, x: torch.Tensor):
    """Vision mode over image tokens (B, N, D) -> (final states, per layer (keys, values) (B, H, N, Dh))."""
    n, kv = x.shape[1], []
    for layer in model.layers:
        q, k, v = layer.self_attn.qkv(layer.self_attn_layer_norm(x, n), n)
        kv.append((k, v))
        x = layer.attend_with(x, F.scaled_dot_product_attention(q, k, v), n)
    return model.beit3.encoder.final_norm(x, n), kv


def caption_mask(n_image: int, length: int, device) -> torch.Tensor:
    """(2T-1, N + 2T-1) bool, True = may attend: rows are the T caption tokens then the masks
    at text positions 1..T-1; columns the image, the tokens, the masks."""
    t = torch.arange(length, device=device)
    masks = torch.arange(1, length, device=device)
    tokens_rows = torch.cat([t[None, :] <= t[:, None], torch.zeros(length, length - 1, dtype=torch.bool,
                                                                  device=device)], dim=1)
    mask_rows = torch.cat([t[None, :] < masks[:, None], torch.eye(length - 1, dtype=torch.bool, device=device)],
                          dim=1)
    text = torch.cat([tokens_rows, mask_rows])
    return torch.cat([torch.ones(text.shape[0], n_image, dtype=torch.bool, device=device), text], dim=1)


def caption_logits(model: Beit3Model, image_kv, ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    """ids (B, T) from <s> -> logits (B, T-1, V) for tokens 1..T-1, each read at its [MASK]."""
    b, length = ids.shape
    positions = torch.cat([torch.arange(length), torch.arange(1, length)]).to(ids.device)
    x = model.embed_text(torch.cat([ids, torch.full((b, length - 1), mask_id, device=ids.device)], dim=1),
                         positions=positions[None].expand(b, -1))
    allowed = caption_mask(image_kv[0][0].shape[2], length, ids.device)
    for layer, (ik, iv) in zip(model.layers, image_kv):
        q, k, v = layer.self_attn.qkv(layer.self_attn_layer_norm(x, 0), 0)
        ctx = F.scaled_dot_product_attention(q, torch.cat([ik, k], dim=2), torch.cat([iv, v], dim=2),
                                             attn_mask=allowed)
        x = layer.attend_with(x, ctx, 0)
    return model.caption_logits(model.beit3.encoder.final_norm(x[:, length:], 0))


def losses(model: Beit3Model, batch, mask_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    image = model.embed_image(batch.pixels)
    states, image_kv = vision_with_kv(model, image)
    img = model.image_embedding(states)
    txt = model.text_embedding(model.text(batch.texts, batch.texts == pad_id))
    b = img.shape[0]
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B + B*K): captions first
    target = torch.arange(b)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :b].T, target)) / 2

    fused = model.fusion(image, batch.questions, batch.questions == pad_id)
    answer_logits = model.answer_logits(fused)
    onehot = F.one_hot(batch.answers, answer_logits.shape[1]).float()
    vqa = F.binary_cross_entropy_with_logits(answer_logits, onehot) * answer_logits.shape[1]  # as unilm scales it

    captions = batch.texts[:b]
    out = caption_logits(model, image_kv, captions, mask_id)
    caption = F.cross_entropy(out.reshape(-1, out.shape[-1]), captions[:, 1:].reshape(-1), ignore_index=pad_id,
                              label_smoothing=SMOOTHING)
    return {"contrastive": contrastive, "vqa": vqa, "caption": caption}
