"""Every toy in tests.helpers.toys.WEIGHTS ships: their tests skip a toy without weights (for a
toy still training), so a lost weights file would otherwise pass unnoticed."""

import tomllib

import pytest

from tests.helpers.toys import REPO, WEIGHTS, trained


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_toy_ships_weights_and_settings(name):
    assert trained(name), f"model_repo/{name}/{WEIGHTS[name]} is missing"
    assert tomllib.loads((REPO / name / "model.toml").read_text())["name"] == name
