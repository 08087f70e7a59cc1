"""vlserve_kernels: Triton fused-attention kernels and their torch references.

Importing the package needs only torch; Triton is imported when a kernel
first runs, so CPU-only installs can import it (check `triton_available()`).
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
