"""coca-toy's training loss over the world's tokens equals the full-vocabulary cross-entropy
for a projection whose other columns are zero, and leaves those columns without gradient."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

FOLDER = Path(__file__).resolve().parents[2] / "model_repo" / "coca-toy"


@pytest.fixture(scope="module")
def train():
    sys.path.insert(0, str(FOLDER))  # train.py imports its sibling evaluate.py
    saved = sys.modules.pop("evaluate", None)
    try:
        spec = importlib.util.spec_from_file_location("coca_toy_train", FOLDER / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(FOLDER))
        sys.modules.pop("evaluate", None)
        if saved is not None:
            sys.modules["evaluate"] = saved


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_world_loss_equals_full_cross_entropy(train, smoothing):
    from vlserve.families.coca.tokenizer import ClipTokenizer

    tok = ClipTokenizer(train.CONTEXT)
    used = train.world_token_ids(tok)
    assert tok.eot_id in used.tolist() and tok.pad_id not in used.tolist()
    g = torch.Generator().manual_seed(0)
    projection = torch.zeros(16, 49408, dtype=torch.float64)
    projection[:, used] = torch.randn(16, used.numel(), generator=g, dtype=torch.float64)
    projection.requires_grad_(True)
    states = torch.randn(3, 7, 16, generator=g, dtype=torch.float64)
    targets = used[torch.randint(0, used.numel(), (3, 7), generator=g)]
    targets[0, 5:] = tok.pad_id  # padding is ignored
    got = train.world_caption_loss(states, targets, projection, used, tok.pad_id, smoothing)
    want = F.cross_entropy((states @ projection).reshape(-1, 49408), targets.reshape(-1), ignore_index=tok.pad_id,
                           label_smoothing=smoothing)
    assert abs(got.item() - want.item()) < 1e-10
    got.backward()
    others = torch.ones(49408, dtype=torch.bool)
    others[used] = False
    assert projection.grad[:, others].abs().max().item() == 0.0
    assert projection.grad[:, used].abs().max().item() > 0.0
