"""Provider choice, session settings and the model.toml `runtime` syntax."""

import logging

import pytest
import torch

from vlserve.families.blip.engine import BlipEngine, EngineOptions
from vlserve.engine.onnx.runtime import OrtOptions, choose_providers
from vlserve.errors import CheckpointError
from vlserve.repository.spec import ModelSpec
from vlserve.settings import Settings

GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU = ["AzureExecutionProvider", "CPUExecutionProvider"]
cuda, cpu = torch.device("cuda", 1), torch.device("cpu")


def test_auto_providers_follow_the_install_and_the_device(caplog):
    assert choose_providers("auto", cuda, GPU, "vision") == GPU
    assert choose_providers("auto", cuda, GPU, "text") == GPU[1:]  # TensorRT would rebuild per text length
    assert choose_providers("auto", cpu, GPU, "vision") == ["CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="vlserve.onnx"):
        assert choose_providers("auto", cuda, CPU, "vision") == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in caplog.text


def test_listed_providers_must_be_installed():
    assert choose_providers("cuda, cpu", cuda, GPU, "text") == GPU[1:]
    with pytest.raises(CheckpointError, match="CUDAExecutionProvider.*not installed"):
        choose_providers("cuda,cpu", cuda, CPU, "text")


def test_session_settings_are_applied(pow2):
    engine = BlipEngine(pow2.folder, EngineOptions(onnx_graphs=("vision",), ort=OrtOptions(
        providers="cpu", intra_op_threads=1, optimization="basic")))
    options = engine.onnx.sessions["vision"].session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_BASIC"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert engine.runtime("vision") == "onnx" and engine.runtime("text") == "torch"


def spec(tmp_path, toml: str) -> ModelSpec:
    (tmp_path / "model.toml").write_text('family = "blip"\n' + toml)  # no weights here to sniff
    return ModelSpec.from_folder(tmp_path)


def test_model_toml_runtime_for_all_or_per_graph(tmp_path):
    assert spec(tmp_path, "").onnx_graphs() == ()
    assert spec(tmp_path, 'runtime = "onnx"\n').onnx_graphs() == ("vision", "text", "fusion")
    per_graph = spec(tmp_path, '[runtime]\nvision = "onnx"\nfusion = "onnx"\nonnx_dir = "/srv/onnx"\n')
    assert per_graph.onnx_graphs() == ("vision", "fusion") and per_graph.onnx_dir == "/srv/onnx"
    for bad in ('runtime = "tensorrt"\n', '[runtime]\ndecoder = "onnx"\n', '[runtime]\nvison = "onnx"\n'):
        with pytest.raises(CheckpointError, match="runtime"):
            spec(tmp_path, bad)


def test_thread_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("VLSERVE_ORT_INTRA_OP_THREADS", "3")
    monkeypatch.setenv("VLSERVE_ORT_OPTIMIZATION", "extended")
    s = Settings()
    assert (s.ort_intra_op_threads, s.ort_optimization, s.ort_providers, s.ort_spinning) == (3, "extended", "auto",
                                                                                            False)


def test_precision_sets_the_dtype_and_the_int8_graphs(tmp_path):
    settings = Settings()
    assert spec(tmp_path, "").resolved_precision(settings) == ("float32", ())
    assert spec(tmp_path, 'dtype = "bfloat16"\n').resolved_precision(settings) == ("bfloat16", ())
    assert spec(tmp_path, 'precision = "bf16"\n').resolved_precision(settings) == ("bfloat16", ())
    default = ("float32", ("vision", "decoder"))
    assert spec(tmp_path, 'precision = "int8"\n').resolved_precision(settings) == default
    onnx = spec(tmp_path, 'precision = "int8"\nruntime = "onnx"\n')
    assert onnx.resolved_precision(settings) == ("float32", ("vision", "decoder", "text", "fusion"))
    chosen = spec(tmp_path, 'precision = "int8"\nint8_graphs = ["decoder"]\n')
    assert chosen.resolved_precision(settings) == ("float32", ("decoder",))
    # the server's precision applies where model.toml says neither precision nor dtype
    assert spec(tmp_path, "").resolved_precision(Settings(precision="int8")) == default
    assert spec(tmp_path, 'dtype = "bfloat16"\n').resolved_precision(Settings(precision="int8")) == ("bfloat16", ())


@pytest.mark.parametrize("toml, message", [
    ('precision = "int8"\ndtype = "float32"\n', "precision or dtype"),
    ('int8_graphs = ["decoder"]\n', "int8_graphs needs"),
    ('precision = "int4"\n', "precision"),
    ('precision = "int8"\nint8_graphs = ["visoin"]\n', "int8_graphs"),
])
def test_precision_mistakes_are_named(tmp_path, toml, message):
    with pytest.raises(CheckpointError, match=message):
        spec(tmp_path, toml)
