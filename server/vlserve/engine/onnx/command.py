"""`vlserve export-onnx`: export a model folder's encoder graphs to ONNX, checked against torch."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> dict:
    import torch

    from ...errors import InvalidInputError
    from ..blip_loader import load_blip
    from .export import export_graphs
    from .graphs import ENCODER_GRAPHS

    dtype = torch.float16 if args.dtype in ("float16", "fp16") else torch.float32
    model = load_blip(args.model, device="cpu", dtype=dtype).model
    held = [g for g in ENCODER_GRAPHS if g in model.components.graphs]
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()] if args.graphs else held
    absent = [g for g in graphs if g not in held]
    if absent or not graphs:
        raise InvalidInputError(f"cannot export {', '.join(absent) or 'nothing'}: this checkpoint's encoder "
                                f"graphs are {', '.join(held)}", param="graphs")
    folder = Path(args.model)
    return export_graphs(model, folder, graphs, Path(args.out) if args.out else folder / "onnx")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export-onnx", help="export encoder graphs to ONNX (checked against torch)")
    p.add_argument("model", help="model folder (HF layout or original .pth)")
    p.add_argument("--graphs", default=None,
                   help="comma-separated: vision,text,fusion (default: every encoder graph the weights hold)")
    p.add_argument("--out", default=None, help="folder for the .onnx files and manifest (default: MODEL/onnx)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "fp32", "fp16"],
                   help="float16 is meant for GPU providers")
    p.set_defaults(run=_run)
    return p
