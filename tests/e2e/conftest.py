import pytest

from tests.helpers.own_blip import make_folder, tiny_config


@pytest.fixture(scope="session")
def e2e_repo(tmp_path_factory):
    """One model, large enough that a long beam search takes a while (for drain tests)."""
    root = tmp_path_factory.mktemp("e2e-repo")
    make_folder(root / "toy", config=tiny_config(width=64, image=64))
    (root / "toy" / "model.toml").write_text('name = "toy"\n[batching]\nmax_queue_delay_ms = 30\n')
    return root


@pytest.fixture(scope="session")
def drain_repo(tmp_path_factory):
    """One request decoding at a time, so a burst of requests stays queued well after SIGTERM
    (about 2 s on a 2-core VM): the drain test must still have work in flight when it lands."""
    root = tmp_path_factory.mktemp("drain-repo")
    make_folder(root / "toy", config=tiny_config(width=128, image=96))
    (root / "toy" / "model.toml").write_text(
        'name = "toy"\n[batching]\nmax_batch_size = 1\nmax_decode_rows = 32\nmax_queue_size = 1024\n')
    return root
