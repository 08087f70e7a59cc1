"""Step env: GPU, driver, versions, which optional packages import, the engine's import path."""

from __future__ import annotations

import os
import subprocess
import sys

from .child import import_e2e_path
from .core import Ctx, step

DISTS = ("torch", "triton", "transformers", "onnxruntime", "numpy", "pydantic", "pydantic-core",
         "pydantic-settings", "typing-extensions", "annotated-types", "typing-inspection", "python-dotenv",
         "tokenizers", "safetensors", "sentencepiece", "pillow", "prometheus-client", "pytest", "pytest-xdist",
         "open_clip_torch", "torchscale", "beit3-gml", "timm", "fastapi", "uvicorn")


@step("env", 60, 45, 60)
def step_env(ctx: Ctx) -> None:
    import importlib.metadata as md

    versions = {}
    for dist in DISTS:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    ctx.put("versions", versions)
    ctx.put("python", sys.version.split()[0])
    ctx.put("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET"))
    import torch

    info = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    else:
        info["gpu"] = "cpu-smoke" if ctx.smoke else "no-cuda"
    ctx.put("device", info)
    try:  # read-only query; the card's settings are left alone
        q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu,memory.used"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv"], capture_output=True, text=True,
                             timeout=15)
        ctx.put("nvidia_smi", smi.stdout.strip() or smi.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        ctx.put("nvidia_smi", f"unavailable: {e}")
    found = {}
    import importlib.util

    for mod in ("pydantic", "pydantic_settings", "open_clip", "beit3", "torchscale", "xdist", "onnxruntime"):
        spec = importlib.util.find_spec(mod)
        found[mod] = spec.origin if spec else None
    ctx.put("importable", found)
    try:
        ctx.put("engine_path_third_party", import_e2e_path())
        ctx.put("engine_path", "ok")
    except Exception as e:  # recorded; the e2e steps will fail with the same error
        ctx.put("engine_path", f"{type(e).__name__}: {e}")
