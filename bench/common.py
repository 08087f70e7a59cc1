"""Shared benchmark plumbing: random-weight BLIP folders, timing, machine facts, JSON output."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "server"))

from vlserve.families.blip.saver import save_blip  # noqa: E402
from vlserve.families.blip.tokenizer import wordpiece_tokenizer  # noqa: E402
from vlserve.families.blip.config import preset  # noqa: E402
from vlserve.families.blip.model import Blip, Components  # noqa: E402


def random_blip_folder(folder: Path, arch: str, components: Components, seed: int = 0, config=None) -> Path:
    """A BLIP-base/large architecture with random weights (speed does not need trained ones);
    `config` (a BlipConfig) instead of the preset: gpu_suite.py's tiny CPU smoke run."""
    if (folder / "model.safetensors").is_file():
        return folder
    config = config or preset(arch)
    torch.manual_seed(seed)
    model = Blip(config, components)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and ("norm" in name.lower()):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.normal_(0, 0.02)
            else:
                p.normal_(0, 0.02)
    if model.text_decoder is not None:
        model.text_decoder.tie_weights()
    save_blip(model, folder)
    words = [f"w{i}" for i in range(200)]
    wordpiece_tokenizer(words).save(str(folder / "tokenizer.json"))
    return folder


def parse_run_args(ap) -> "argparse.Namespace":
    """The flags every model benchmark takes (batch, tokens, threads, repeats, out), parsed;
    torch's thread count set from them."""
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Time several functions in turn, round after round, so that a noisy neighbour on a
    shared machine slows all of them alike; returns {name: {median_s, min_s, runs}}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "runs": t} for name, t in runs.items()}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def save(name: str, payload: dict, out: str | None = None) -> Path:
    path = Path(out) if out else ROOT / "bench" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def scratch_dir(prefix: str) -> Path:
    """A fresh temporary folder removed when the process exits: generated models run to GBs,
    and runs left behind filled a shared disk once."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path
