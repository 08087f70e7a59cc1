"""`export-onnx` and the engine's export-on-first-load: files, manifest, checks, failure paths."""

import json
import os
import shutil

import onnx
import onnxruntime as ort
import pytest

from tests.helpers.own_blip import make_folder
from vlserve.families.blip.engine import BlipEngine, EngineOptions
from vlserve.cli import build_parser
from vlserve.errors import CheckpointError, InvalidInputError
from vlserve.families.blip.onnx import export


def export_onnx(*argv) -> dict:
    args = build_parser().parse_args(["export-onnx", *map(str, argv)])
    return json.loads(json.dumps(args.run(args)))  # what the CLI prints must be JSON


def test_exported_folder_has_checked_graphs_with_dynamic_axes(pow2):
    out = pow2.folder / "onnx"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["fusion-float32.onnx", "text-float32.onnx", "vision-float32.onnx"]
    assert set(manifest["source"]) == {"config.json", "model.safetensors"}
    for name, report in manifest["files"].items():
        assert 0 < report["max_abs_diff"] < 1e-4 and report["checked_shapes"] == [[1, 5], [3, 11]]
        onnx.checker.check_model(str(out / name), full_check=True)
    session = ort.InferenceSession(str(out / "fusion-float32.onnx"), providers=["CPUExecutionProvider"])
    dims = {i.name: i.shape for i in session.get_inputs()}
    assert isinstance(dims["image_states"][0], str) and dims["image_states"][1:] == [17, 32]
    assert all(isinstance(d, str) for d in dims["input_ids"])  # batch and text length
    assert [o.name for o in session.get_outputs()] == ["hidden", "itm_logits"]


def test_cli_exports_float16_for_gpus(pow2, tmp_path):
    report = export_onnx(pow2.folder, "--graphs", "vision", "--dtype", "float16", "--out", tmp_path)
    (graph,) = report["graphs"]
    assert graph["graph"] == "vision" and graph["dtype"] == "float16" and graph["max_abs_diff"] < 5e-2
    session = ort.InferenceSession(str(tmp_path / "vision-float16.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert list(json.loads((tmp_path / "manifest.json").read_text())["files"]) == ["vision-float16.onnx"]


def test_cli_refuses_graphs_the_weights_lack(pow2, tmp_path):
    with pytest.raises(InvalidInputError, match="decoder"):
        export_onnx(pow2.folder, "--graphs", "vision,decoder", "--out", tmp_path)
    assert not (tmp_path / "vision-float32.onnx").exists()


def test_a_graph_that_differs_from_torch_is_not_kept(pow2, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", {"float32": 0.0, "float16": 0.0})
    with pytest.raises(CheckpointError, match="differs from torch"):
        export_onnx(pow2.folder, "--graphs", "text", "--out", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_exports_are_reused_and_stale_ones_redone(pow2, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(pow2.folder, folder)  # keeps mtimes: the exports stay current
    before = (folder / "onnx" / "vision-float32.onnx").stat().st_mtime_ns
    BlipEngine(folder, EngineOptions(onnx_graphs=("vision",)))
    assert (folder / "onnx" / "vision-float32.onnx").stat().st_mtime_ns == before
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    assert export.missing_exports(folder, folder / "onnx", ("vision", "text"), "float32") == ["vision", "text"]
    BlipEngine(folder, EngineOptions(onnx_graphs=("vision",)))
    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    assert list(manifest["files"]) == ["vision-float32.onnx"]  # text was exported from the old weights
    assert manifest["source"]["model.safetensors"][1] == weights.stat().st_mtime_ns


def test_missing_exports_in_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path):
    folder = make_folder(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not writable.*vlserve export-onnx"):
        BlipEngine(folder, EngineOptions(onnx_graphs=("vision",), onnx_dir="config.json/onnx"))


def test_only_encoder_graphs_run_on_onnx(tmp_path):
    folder = make_folder(tmp_path / "m")
    with pytest.raises(ValueError, match="decoder"):
        BlipEngine(folder, EngineOptions(onnx_graphs=("vision", "decoder")))


def test_fusion_without_itm_head_exports_hidden_states_only(tmp_path):
    """BLIP's VQA checkpoints hold the fusion encoder but no ITM head."""
    from tests.helpers.own_blip import tiny_config
    from tests.helpers.tiny_blip import randomize
    from vlserve.families.blip.model import Blip, Components

    model = Blip(tiny_config(), Components(text_encoder=True, text_encoder_cross=True)).eval()
    randomize(model, 3)
    report = export.export_graph(model, "fusion", tmp_path / "fusion.onnx")
    assert report["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "fusion.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["hidden"]
