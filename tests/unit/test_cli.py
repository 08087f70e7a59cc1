import json

from PIL import Image

from tests.helpers.own_blip import make_folder
from vlserve.cli import main


def test_caption_vqa_score_commands(tmp_path, capsys):
    folder = make_folder(tmp_path / "m")
    img = tmp_path / "a.png"
    Image.new("RGB", (20, 20), (0, 0, 255)).save(img)
    assert main(["caption", str(img), "--model", str(folder), "--max-new-tokens", "4", "--num-beams", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == str(img) and isinstance(out[0]["captions"][0]["tokens"], list)
    assert main(["vqa", str(img), "what color", "--model", str(folder), "--candidates", "red", "blue"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] in ("red", "blue")
    assert main(["score", str(img), "red dog", "cat", "--model", str(folder)]) == 0
    assert len(json.loads(capsys.readouterr().out)["itm"]) == 2


def test_bad_image_is_a_json_error(tmp_path, capsys):
    folder = make_folder(tmp_path / "m")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["caption", str(bad), "--model", str(folder)]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["error"]["type"] == "invalid_image"
