"""bench/kernels.py: its FLOP/byte bookkeeping, and a --dry-run of every code
path (CPU, interpreter, tiny shapes)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from vlserve_kernels.reference import attention_mask

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("lq,lk", [(1, 1), (7, 7), (5, 9), (9, 4), (32, 577)])
@pytest.mark.parametrize("causal", [False, True])
def test_visible_pairs_counts_the_mask(bench, lq, lk, causal):
    expected = int(attention_mask(1, lq, lk, causal=causal).sum())
    assert bench.visible_pairs(lq, lk, causal) == expected


def test_flop_and_byte_bookkeeping(bench):
    assert bench.attention_flops(32, 12, 577, 577, 64, False) == 4 * 32 * 12 * 577 * 577 * 64
    assert bench.attention_flops(1, 1, 4, 4, 16, True) == 4 * 16 * (1 + 2 + 3 + 4)
    assert bench.attention_bytes(2, 3, 5, 7, 8, elem=2) == 2 * 2 * 3 * 8 * (5 + 5 + 7 + 7)
    cross = next(c for c in bench.CASES if c.name == "decode_cross_r64")
    assert bench.decode_rows(cross) == (22, 22 * 577)  # ceil(64 / 3) images
    assert bench.decode_bytes(64, 12, 64, 22 * 577, elem=2) == 2 * 12 * 64 * (2 * 64 + 2 * 22 * 577)


def test_dry_run_writes_every_case(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "kernels.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "kernels"),
                                                                     os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"gpu", "torch", "triton"} <= set(data["machine"]) and data["copy_bandwidth_gbs"] > 0
    names = {r["case"] for r in data["results"]}
    assert names == {"vit_b16_384", "vit_l16_384", "text_causal", "cross_text_image", "decode_cross_r64",
                     "decode_cross_r128", "decode_cross_r256", "decode_self_r64"}
    for r in data["results"]:
        assert isinstance(r["ms"]["triton"], float), r["ms"]["triton"]
        assert any(isinstance(t, float) for k, t in r["ms"].items() if k != "triton")  # a baseline ran
    assert proc.stdout.rstrip().splitlines()[-1].startswith("decode_self_r64")  # table last
