"""ONNX Runtime sessions behind the engine's encoder-graph methods.

Providers come from what is installed: with onnxruntime-gpu and a CUDA engine, CUDA (and
TensorRT for the vision graph, whose shapes vary only in batch; text graphs see a new
length in nearly every batch, which would make TensorRT rebuild engines); CPU otherwise.
Inputs and outputs are bound to torch tensors (IO binding), so on a GPU nothing crosses
to the host and on the CPU nothing is copied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import CheckpointError


@dataclass(frozen=True)
class GraphSpec:
    """An exported graph's interface: input and output names with their dims ("batch",
    "length" or a fixed size); the runtime sizes its profiles and checks calls with it."""

    name: str
    inputs: dict[str, tuple]
    outputs: dict[str, tuple]


log = logging.getLogger("vlserve.onnx")

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}
LEVELS = ("disable", "basic", "extended", "all")
ELEMENT = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64}
NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


@dataclass(frozen=True)
class OrtOptions:
    providers: str = "auto"  # auto, or a comma list of tensorrt | cuda | cpu, in order of preference
    intra_op_threads: int = 0  # per session; 0: ONNX Runtime's default (one per physical core)
    optimization: str = "all"  # graph optimisation level: disable | basic | extended | all
    # idle pool threads spin for a while after each run; off by default because the torch
    # decoder runs right after on the same cores
    spinning: bool = False
    max_batch: int = 64  # TensorRT profile: largest batch it is built for


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError("runtime 'onnx' needs ONNX Runtime: pip install 'vlserve[onnx]' "
                              "(or 'vlserve[gpu]' for onnxruntime-gpu)") from None
    return onnxruntime


def choose_providers(requested: str, device: torch.device, available: list[str], graph: str) -> list[str]:
    if requested != "auto":
        names = [PROVIDERS.get(p.strip().lower(), p.strip()) for p in requested.split(",") if p.strip()]
        absent = [n for n in names if n not in available]
        if absent or not names:
            raise CheckpointError(f"ONNX Runtime providers {absent or requested!r} are not installed "
                                  f"(installed: {', '.join(available)})")
        return names
    chosen = []
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            log.warning("device %s but ONNX Runtime has no CUDA provider (install onnxruntime-gpu instead of "
                        "onnxruntime); the %s graph runs on the CPU", device, graph)
        else:
            if graph == "vision" and "TensorrtExecutionProvider" in available:
                chosen.append("TensorrtExecutionProvider")
            chosen.append("CUDAExecutionProvider")
    return chosen + ["CPUExecutionProvider"]


def _session_options(ort, options: OrtOptions):
    if options.optimization not in LEVELS:
        raise CheckpointError(f"ORT optimisation level must be one of {LEVELS}, got {options.optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[options.optimization]
    so.intra_op_num_threads = options.intra_op_threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
    so.log_severity_level = 3  # errors only: the CPU provider's fallback notes are not news
    return so


def _profile(spec: GraphSpec, batch: int, length: int) -> str:
    sizes = {"batch": batch, "length": length}
    return ",".join(f"{n}:{'x'.join(str(sizes.get(d, d)) for d in dims)}" for n, dims in spec.inputs.items())


def _provider_options(name: str, device: torch.device, spec: GraphSpec, options: OrtOptions, fp16: bool,
                      cache: Path | None, max_length: int) -> dict:
    index = device.index or 0
    if name == "CUDAExecutionProvider":
        return {"device_id": index}
    if name == "TensorrtExecutionProvider":
        opts = {"device_id": index, "trt_fp16_enable": fp16,
                "trt_profile_min_shapes": _profile(spec, 1, 1),
                "trt_profile_opt_shapes": _profile(spec, min(8, options.max_batch), min(32, max_length)),
                "trt_profile_max_shapes": _profile(spec, options.max_batch, max_length)}
        if cache is not None:
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
        return opts
    return {}


class OrtGraph:
    """One exported graph in one session: tensors in, tensors out (named as in its GraphSpec)."""

    def __init__(self, path: Path, spec: GraphSpec, device: torch.device, options: OrtOptions,
                 max_length: int = 512, trt_cache: Path | None = None):
        ort = import_ort()
        self.spec = spec
        providers = choose_providers(options.providers, device, ort.get_available_providers(), spec.name)
        fp16 = "float16" in path.name
        configs = [_provider_options(p, device, spec, options, fp16, trt_cache, max_length) for p in providers]
        try:
            self.session = ort.InferenceSession(str(path), _session_options(ort, options),
                                                providers=list(zip(providers, configs)))
        except Exception as exc:  # ORT raises its own exception types; say which file failed
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        on_gpu = self.provider != "CPUExecutionProvider"
        self.device = torch.device("cuda", device.index or 0) if on_gpu else torch.device("cpu")
        self.input_dtypes = {i.name: ELEMENT[i.type] for i in self.session.get_inputs()}
        self.output_dtypes = {o.name: ELEMENT[o.type] for o in self.session.get_outputs()}

    def __call__(self, sizes: dict[str, int], **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """sizes: the values of the named axes ("batch", "length") for the outputs' shapes."""
        kind, index = self.device.type, self.device.index or 0
        binding = self.session.io_binding()
        keep = []  # the bound tensors must outlive the run
        for name, dtype in self.input_dtypes.items():
            t = inputs[name].to(self.device, dtype).contiguous()
            keep.append(t)
            binding.bind_input(name, kind, index, NUMPY[dtype], tuple(t.shape), t.data_ptr())
        outputs = {}
        for name, dtype in self.output_dtypes.items():
            shape = tuple(sizes.get(d, d) for d in self.spec.outputs[name])
            out = outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            binding.bind_output(name, kind, index, NUMPY[dtype], shape, out.data_ptr())
        if kind == "cuda":  # torch queued the inputs on its own stream; ORT reads them on another
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return outputs
