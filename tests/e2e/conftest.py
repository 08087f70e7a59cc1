import pytest

from tests.helpers.own_blip import make_folder, tiny_config


@pytest.fixture(scope="session")
def e2e_repo(tmp_path_factory):
    """One model, large enough that a long beam search takes a while (for drain tests)."""
    root = tmp_path_factory.mktemp("e2e-repo")
    make_folder(root / "toy", config=tiny_config(width=64, image=64))
    (root / "toy" / "model.toml").write_text('name = "toy"\n[batching]\nmax_queue_delay_ms = 30\n')
    return root
