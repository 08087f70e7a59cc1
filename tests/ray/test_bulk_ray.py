"""vlserve bulk on Ray Data: caption (a folder), capfilt and score (two WebDataset shards) with
two workers on a local Ray cluster give the one-machine job's rows (same keys in the same
order, captions, error rows; floats within tolerances), a run resumes from an --out the
one-machine job began, and the CLI flags."""

import io
import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vlserve.bulk import Options, run_bulk, run_on_ray
from vlserve.bulk.ray_data import RayMissingError
from vlserve.cli import main as cli
from vlserve.shapes.files import write_scenes

from tests.unit.test_bulk import one_thread  # noqa: F401 - the one-machine runs on one thread, as each worker does

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "model_repo" / "blip-toy"
N = 6
SHORT = {"max_new_tokens": 8}  # the toy's captions are short anyway; keeps the test quick on 2 cores


@pytest.fixture(scope="module")
def cluster():
    """Two CPUs: one per worker (the read tasks reserve none). A cluster another module left
    running is used as it is."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of scenes with a file that is no image, and the same scenes as two WebDataset
    shards (one per worker; captions as .txt or .json), the second ending in a sample whose
    image is garbage."""
    root = tmp_path_factory.mktemp("inputs")
    scenes = root / "scenes"
    write_scenes(scenes, N, seed=5)
    index = json.loads((scenes / "scenes.json").read_text())["scenes"]
    (scenes / "broken.png").write_bytes(b"not an image")
    shards = root / "shards"
    shards.mkdir()
    for name, part in (("a", index[:N // 2]), ("b", index[N // 2:])):
        with tarfile.open(shards / f"{name}.tar", "w") as tar:
            for i, scene in enumerate(part):
                text = ("txt", scene["caption"].encode()) if i % 2 else ("json", json.dumps(scene).encode())
                for ext, data in (("png", (scenes / scene["image"]).read_bytes()), text):
                    _add(tar, f"{name}{i:03d}.{ext}", data)
            if name == "b":
                _add(tar, "b999.png", b"\x89PNG but not really")
                _add(tar, "b999.txt", b"a small red square")
    return scenes, shards


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def read_rows(out: Path) -> list[dict]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    return pq.read_table(out).to_pylist()


def assert_same_rows(got: list[dict], expected: list[dict], floats: dict[str, float]) -> None:
    """Same keys in the same order, the same columns; floats (and float lists) within `floats`."""
    assert [r["key"] for r in got] == [r["key"] for r in expected]
    for g, e in zip(got, expected):
        assert g.keys() == e.keys(), g["key"]
        for column, value in e.items():
            if column in floats and value is not None:
                assert g[column] == pytest.approx(value, abs=floats[column]), (g["key"], column)
            else:
                assert g[column] == value, (g["key"], column)


def test_caption_of_a_folder_equals_the_one_machine_job_and_resumes(tmp_path, cluster, inputs):
    scenes, _ = inputs
    options = Options(generation=SHORT)
    alone = tmp_path / "alone.jsonl"
    run_bulk("caption", scenes, alone, TOY, batch_size=2, options=options, progress=False)
    expected = read_rows(alone)
    assert sum(r["error"] is not None for r in expected) == 1  # broken.png

    out = tmp_path / "ray.jsonl"
    summary = run_on_ray("caption", scenes, out, TOY, workers=2, batch_size=2, options=options, progress=False)
    assert summary["rows_written"] == N + 1 and summary["errors"] == 1 and summary["ray"]["workers"] == 2
    assert_same_rows(read_rows(out), expected, {"logprob": 1e-4})

    # resumed: an --out the one-machine job wrote three rows of; the Ray run writes the rest
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_text("".join(alone.read_text().splitlines(keepends=True)[:3]))
    summary = run_on_ray("caption", scenes, resumed, TOY, workers=2, batch_size=2, options=options, progress=False)
    assert summary["done_before"] == 3 and summary["rows_written"] == N + 1 - 3
    assert_same_rows(read_rows(resumed), expected, {"logprob": 1e-4})


def test_capfilt_of_shards_to_parquet_equals_the_one_machine_job(tmp_path, cluster, inputs):
    _, shards = inputs
    options = Options(generation=SHORT | {"seed": 7}, num_synthetic=2)
    alone, out = tmp_path / "alone.parquet", tmp_path / "ray.parquet"
    run_bulk("capfilt", shards, alone, TOY, batch_size=3, part_rows=4, options=options, progress=False)
    summary = run_on_ray("capfilt", shards, out, TOY, workers=2, batch_size=3, part_rows=4, options=options,
                         progress=False)
    expected = read_rows(alone)
    assert summary["input_kind"] == "webdataset" and summary["errors"] == 1
    assert [r["key"] for r in expected if r["error"]] == ["b999"]
    assert_same_rows(read_rows(out), expected, {"itm": 1e-5})
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in alone.iterdir())  # same parts


def test_score_from_the_command_line_equals_the_one_machine_job(tmp_path, cluster, inputs, capsys):
    _, shards = inputs
    alone, out = tmp_path / "alone.jsonl", tmp_path / "ray.jsonl"
    run_bulk("score", shards, alone, TOY, batch_size=4, progress=False)
    # Ray is already initialised in this process: --ray uses that cluster
    code = cli(["bulk", "score", str(shards), "--out", str(out), "--model", str(TOY), "--batch-size", "4",
                "--quiet", "--ray", "local", "--ray-workers", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == N + 1 and summary["ray"]["address"] == "local"
    assert_same_rows(read_rows(out), read_rows(alone), {"itc": 1e-5, "itm": 1e-5})


def test_without_ray_the_error_says_what_to_install(tmp_path, monkeypatch, inputs):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayMissingError, match=r"pip install 'vlserve\[ray\]'"):
        run_on_ray("caption", inputs[0], tmp_path / "out.jsonl", TOY)
