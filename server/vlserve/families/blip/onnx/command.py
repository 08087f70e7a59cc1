"""`vlserve export-onnx` for a BLIP folder: its encoder graphs to ONNX, checked against torch."""

from __future__ import annotations

from pathlib import Path


def export_onnx(folder: Path, graphs: list[str] | None, out: Path | None, dtype: str) -> dict:
    import torch

    from ....errors import InvalidInputError
    from ..loader import load_blip
    from .export import export_graphs
    from .graphs import ENCODER_GRAPHS

    half = dtype in ("float16", "fp16")
    model = load_blip(folder, device="cpu", dtype=torch.float16 if half else torch.float32).model
    held = [g for g in ENCODER_GRAPHS if g in model.components.graphs]
    graphs = graphs or held
    absent = [g for g in graphs if g not in held]
    if absent or not graphs:
        raise InvalidInputError(f"cannot export {', '.join(absent) or 'nothing'}: this checkpoint's encoder "
                                f"graphs are {', '.join(held)}", param="graphs")
    return export_graphs(model, folder, graphs, out or folder / "onnx")
