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


def test_embed_rank_capfilt_commands_and_the_default_heads(tmp_path, capsys):
    folder = make_folder(tmp_path / "m")
    imgs = []
    for i, color in enumerate([(0, 0, 255), (255, 0, 0)]):
        imgs.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 20), color).save(imgs[-1])
    assert main(["embed", str(imgs[0]), "--texts", "a", "b c", "--model", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["image_embeddings"]) == 1 and len(out["text_embeddings"]) == 2
    assert main(["rank", str(imgs[0]), "red", "blue", "green", "--top-k", "2", "--model", str(folder)]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert len(ranked) == 2 and {r["candidate"] for r in ranked} <= {"red", "blue", "green"}
    assert main(["rank", "a red thing", str(imgs[0]), str(imgs[1]), "--text", "--model", str(folder)]) == 0
    assert sorted(r["index"] for r in json.loads(capsys.readouterr().out)) == [0, 1]
    assert main(["capfilt", str(imgs[0]), "--texts", "a dog", "--num-synthetic", "2", "--min-new-tokens", "2",
                 "--seed", "0", "--model", str(folder)]) == 0  # at least 2 tokens: no empty caption is dropped
    caps = json.loads(capsys.readouterr().out)[0]["captions"]
    assert [c["source"] for c in caps] == ["web", "synthetic", "synthetic"]
    assert main(["score", str(imgs[0]), "a", "--model", str(folder)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"itc", "itm", "texts"}  # every head the model has


def test_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    folder = make_folder(tmp_path / "m")
    assert main(["caption", str(tmp_path / "nope.png"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.png" in json.loads(err)["error"]["message"]


def test_the_model_defaults_to_the_shipped_blip_toy(tmp_path, capsys):
    from tests.helpers.toys import trained

    if not trained("blip-toy"):
        import pytest
        pytest.skip("blip-toy weights absent")
    img = tmp_path / "a.png"
    Image.new("RGB", (128, 128), (255, 255, 255)).save(img)
    assert main(["caption", str(img), "--max-new-tokens", "3"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["captions"]


def test_pretty_prints_tables_instead_of_json(tmp_path, capsys):
    folder = make_folder(tmp_path / "m")
    img = tmp_path / "a.png"
    Image.new("RGB", (20, 20), (0, 0, 255)).save(img)
    assert main(["score", str(img), "red dog", "cat", "--model", str(folder), "--pretty"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["itc", "itm", "texts"] and set(lines[1]) == {"-", " "}
    assert lines[2].endswith("red dog") and lines[3].endswith("cat")
    assert all(len(cell.split(".")[1]) == 4 for line in lines[2:] for cell in line.split()[:2])
    assert main(["embed", str(img), "--model", str(folder), "--pretty"]) == 0
    out = capsys.readouterr().out
    assert "image_embeddings:" in out and "dim 16 [" in out and ", ...]" in out
    assert main(["caption", str(img), "--model", str(folder), "--max-new-tokens", "3", "--pretty"]) == 0
    assert capsys.readouterr().out.split()[:4] == ["image", "text", "tokens", "logprob"]
