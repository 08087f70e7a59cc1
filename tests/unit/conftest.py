import pytest

from tests.helpers.own_blip import make_folder
from vlserve.families.blip.engine import BlipEngine


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    return BlipEngine(make_folder(tmp_path_factory.mktemp("own") / "tiny"))


@pytest.fixture(scope="session")
def tiny_caption_engine(tmp_path_factory):
    """A folder holding only vision + decoder weights, as the captioning checkpoints do."""
    import json

    from safetensors.torch import load_file, save_file

    folder = make_folder(tmp_path_factory.mktemp("cap") / "cap")
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith(("vision_model.", "text_decoder."))},
              folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["BlipForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return BlipEngine(folder)
