"""Exporting encoder graphs to ONNX: torch.export-based exporter, onnx checker, then a check
against the torch graph on random inputs before the file is kept.

Files live in one folder (by default `<model>/onnx/`): `<graph>-<dtype>.onnx` and
`manifest.json`, which records what each file was exported from (weights size and mtime)
and its measured max abs difference, so a retrained model is never served stale graphs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ....errors import CheckpointError
from ..model import Blip
from .graphs import eager_attention, example_inputs, graph_module, graph_spec

log = logging.getLogger("vlserve.onnx")

MANIFEST = "manifest.json"
OPSET = 18
DTYPES = {torch.float32: "float32", torch.float16: "float16"}
# max abs difference allowed against torch, relative to the output's scale (max(1, max |ref|))
TOLERANCE = {"float32": 1e-3, "float16": 5e-2}
# verification shapes: batch 1 and odd sizes prove the axes stayed dynamic
CHECKS = ((1, 5), (3, 11))


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise CheckpointError(f"ONNX graphs are exported in float32 or float16, not {dtype}") from None


def file_name(graph: str, dtype: str) -> str:
    return f"{graph}-{dtype}.onnx"


def fingerprint(folder: Path) -> dict[str, list[int]]:
    """Size and mtime of the files an export depends on: weights and config.json."""
    files = [p for p in folder.iterdir()
             if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pth") or p.name in (
                 "config.json", "med_config.json", "model.safetensors.index.json"))]
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(files)}


def read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def missing_exports(folder: Path, out: Path, graphs, dtype: str) -> list[str]:
    """Graphs without a current export in `out` (absent, or exported from other weights)."""
    manifest = read_manifest(out)
    fresh = manifest.get("source") == fingerprint(folder)
    return [g for g in graphs if not (fresh and file_name(g, dtype) in manifest.get("files", {})
                                      and (out / file_name(g, dtype)).is_file())]


def export_graph(model: Blip, graph: str, path: Path, *, opset: int = OPSET) -> dict:
    """Export one graph of a CPU model to `path`; returns its check report. Raises on a mismatch."""
    import onnx

    spec = graph_spec(model, graph)
    module = graph_module(model, graph)
    dtype = dtype_name(next(model.parameters()).dtype)
    example = example_inputs(model, spec, batch=2, length=7)
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=model.config.text.max_position_embeddings)
    dims = {"batch": batch, "length": length}
    dynamic = {name: {i: dims[d] for i, d in enumerate(shape) if d in dims} for name, shape in spec.inputs.items()}
    start = time.monotonic()
    with eager_attention(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and naming chatter
        program = torch.onnx.export(module, tuple(example.values()), dynamo=True, verbose=False,
                                    input_names=list(spec.inputs), output_names=list(spec.outputs),
                                    dynamic_shapes=dynamic, opset_version=opset)
    tmp = path.with_name(path.name + ".tmp")
    program.save(str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
        diff = verify(model, graph, tmp)
        scale = diff["scale"]
        if diff["max_abs_diff"] > TOLERANCE[dtype] * scale:
            raise CheckpointError(f"ONNX {graph} graph differs from torch by {diff['max_abs_diff']:.3g} "
                                  f"(allowed {TOLERANCE[dtype] * scale:.3g})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"graph": graph, "dtype": dtype, "opset": opset, "max_abs_diff": diff["max_abs_diff"],
              "checked_shapes": diff["shapes"], "export_seconds": round(time.monotonic() - start, 2)}
    log.info("exported %s graph to %s: max abs diff %.3g", graph, path, diff["max_abs_diff"])
    return report


def verify(model: Blip, graph: str, path: Path) -> dict:
    """Max abs difference between ONNX Runtime (CPU) and the torch graph on random inputs."""
    import onnxruntime as ort

    spec = graph_spec(model, graph)
    module = graph_module(model, graph)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, scale = 0.0, 1.0
    for i, (batch, length) in enumerate(CHECKS):
        inputs = example_inputs(model, spec, batch, length, seed=i + 1)
        with eager_attention(model), torch.inference_mode():
            ref = module(*inputs.values())
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = session.run(list(spec.outputs), {k: v.numpy() for k, v in inputs.items()})
        for r, g in zip(ref, got):
            r = r.float().numpy()
            worst = max(worst, float(np.abs(g.astype(np.float32) - r).max()))
            scale = max(scale, float(np.abs(r).max()))
    return {"max_abs_diff": worst, "scale": scale, "shapes": [list(c) for c in CHECKS]}


def export_graphs(model: Blip, folder: Path, graphs, out: Path) -> dict:
    """Export `graphs` of the model loaded from `folder` into `out` and record them in its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    source = fingerprint(folder)
    manifest = read_manifest(out)
    if manifest.get("source") != source:
        manifest = {"format": 1, "source": source, "files": {}}
    reports = []
    for graph in graphs:
        report = export_graph(model, graph, out / file_name(graph, dtype_name(next(model.parameters()).dtype)))
        report["torch"] = torch.__version__
        manifest["files"][file_name(graph, report["dtype"])] = report
        reports.append(report)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return {"out": str(out), "graphs": reports}


def writable(out: Path) -> bool:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            return True
    except OSError:
        return False


def ensure_exports(model: Blip, folder: Path, graphs, out: Path, dtype: torch.dtype) -> dict[str, Path]:
    """Paths of current exports of `graphs`; exports the missing ones when `out` is writable.

    `model` may live on any device; a CPU copy in `dtype` is loaded for the export.
    """
    name = dtype_name(dtype)
    missing = missing_exports(folder, out, graphs, name)
    if missing:
        if not writable(out):
            raise CheckpointError(
                f"{out}: no current ONNX export of graph(s) {', '.join(missing)} ({name}) and the folder "
                f"is not writable; run `vlserve export-onnx {folder} --graphs {','.join(missing)} "
                f"--dtype {name} --out DIR` where you can write, and set [runtime] onnx_dir in model.toml")
        log.info("exporting ONNX graph(s) %s of %s to %s", ", ".join(missing), folder, out)
        export_graphs(cpu_model(model, folder, dtype), folder, missing, out)
    return {g: out / file_name(g, name) for g in graphs}


def cpu_model(model: Blip | None, folder: Path, dtype: torch.dtype) -> Blip:
    """The model itself when it is already a CPU model in `dtype`, else a fresh CPU load."""
    if model is not None:
        p = next(model.parameters())
        if p.device.type == "cpu" and p.dtype == dtype:
            return model
    from ..loader import load_blip

    return load_blip(folder, device="cpu", dtype=dtype).model
