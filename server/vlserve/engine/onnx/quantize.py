"""int8 ONNX graphs: ONNX Runtime's dynamic quantisation (int8 weights per tensor, int8
activations scaled at run time) of an exported float32 graph's MatMul/Gemm nodes, written
beside it and redone when the float graph is newer."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("vlserve.onnx")
OPS = ["MatMul", "Gemm"]  # the matrix products; LayerNorm, softmax and GELU stay float


def int8_path(src: Path) -> Path:
    return src.with_name(f"{src.stem}-int8{src.suffix}")


def ensure_int8(src: Path) -> Path:
    """The int8 copy of `src`, made when missing or stale."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = int8_path(src)
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        log.info("quantising %s to int8 (%s)", src.name, dst.name)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=OPS)
    return dst
