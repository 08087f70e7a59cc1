"""vlserve_kernels: Triton fused-attention kernels and their torch references.

- `attention(q, k, v, *, key_padding_mask, causal, scale)`: prefill / encoder
  / cross attention; returns (B, H, Lq, D) as a view of (B, Lq, H, D) memory.
- `decode_attention(q, k, v, *, kv_lengths, key_padding_mask, row_to_kv,
  scale, prefix_k, prefix_v, prefix_padding_mask, row_to_prefix)`: one query
  per row over a KV cache, split-KV; returns (R, H, D). The optional prefix is
  a key segment stored once and shared by several rows (row_to_prefix), e.g.
  the image tokens of BEiT-3 captioning, attended in one softmax with each
  row's own cache.
- `attention_reference`, `decode_attention_reference`: float64 torch versions
  that define the semantics (reference.py).

Importing the package needs only torch; Triton is imported when a kernel
first runs, so CPU-only installs can import it (check `triton_available()`).
Under TRITON_INTERPRET=1 (set before the first kernel call) the kernels run
on CPU tensors through the Triton interpreter.
"""

from ._common import SUPPORTED_HEAD_DIMS, triton_available
from ._attention import AttentionBlocks, attention, attention_blocks
from ._decode import DecodeBlocks, decode_attention, decode_blocks
from .reference import attention_reference, decode_attention_reference

__all__ = [
    "AttentionBlocks",
    "DecodeBlocks",
    "SUPPORTED_HEAD_DIMS",
    "attention",
    "attention_blocks",
    "attention_reference",
    "decode_attention",
    "decode_blocks",
    "decode_attention_reference",
    "triton_available",
]
