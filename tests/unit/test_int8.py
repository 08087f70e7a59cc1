"""int8 linear layers (models/int8.py) against a float64 reference, and how they replace
nn.Linear inside a module."""

import pytest
import torch
from torch import nn

from vlserve.engine.family import EngineOptions, check_int8
from vlserve.models.int8 import QMAX, Int8Linear, quantize_linears, quantize_rows


def reference(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    return torch.nn.functional.linear(x.double(), linear.weight.double(), linear.bias.double())


@pytest.mark.parametrize("shape", [(1, 48), (3, 7, 48), (130, 48)])
def test_close_to_float64_for_odd_shapes(shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 37)
    x = torch.randn(*shape)
    got = Int8Linear(linear)(x)
    want = reference(x, linear)
    assert got.shape == (*shape[:-1], 37) and got.dtype == torch.float32
    # two roundings to 1/254 of each row's range: about 1% of the output's norm for random data
    assert ((got.double() - want).norm() / want.norm()).item() < 0.02


def test_exact_when_weights_and_inputs_sit_on_the_grid():
    """Integers up to 127 scale to themselves: the int32 sums are exact, so the output is."""
    torch.manual_seed(1)
    linear = nn.Linear(16, 5)
    with torch.no_grad():
        linear.weight.copy_(torch.randint(-QMAX, QMAX + 1, (5, 16)).float())
        linear.weight[:, 0] = QMAX  # each row's max is 127: its scale is exactly 1
        linear.bias.copy_(torch.arange(5.0))
    x = torch.randint(-QMAX, QMAX + 1, (4, 16)).float()
    x[:, 0] = QMAX
    torch.testing.assert_close(Int8Linear(linear)(x).double(), reference(x, linear), atol=1e-3, rtol=0)


def test_rows_quantise_symmetrically_and_zero_rows_stay_zero():
    x = torch.tensor([[0.0, 0.0], [-2.0, 1.0]])
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and q.tolist() == [[0, 0], [-127, 64]]
    assert scale[1, 0].item() == pytest.approx(2 / 127)
    assert Int8Linear(nn.Linear(2, 3, bias=False))(torch.zeros(2, 2)).abs().max() == 0


def test_keeps_the_input_dtype():
    linear = nn.Linear(8, 4)
    assert Int8Linear(linear)(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_quantize_linears_replaces_all_but_the_kept():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    replaced = quantize_linears(model, keep=lambda name: name == "2.1")
    assert replaced == 2
    assert isinstance(model[0], Int8Linear) and isinstance(model[2][0], Int8Linear)
    assert type(model[2][1]) is nn.Linear
    assert model(torch.randn(3, 4)).shape == (3, 2)


def test_int8_is_refused_off_the_cpu():
    check_int8(EngineOptions(int8_graphs=("decoder",)), torch.device("cpu"))
    check_int8(EngineOptions(), torch.device("cuda"))
    with pytest.raises(ValueError, match="CPU only"):
        check_int8(EngineOptions(int8_graphs=("decoder",)), torch.device("cuda"))
