"""vlserve bulk: each input kind and job against the Pipeline called directly, bad items as
rows, and a job killed mid-run that resumes with every key exactly once."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import vlserve
from vlserve.bulk import JOBS, Options, run_bulk
from vlserve.bulk.command import JOB_NAMES
from vlserve.bulk.run import Progress
from vlserve.bulk.writers import JsonlWriter
from vlserve.shapes.files import write_scenes

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "model_repo" / "blip-toy"
N = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy model is tiny: one thread is fastest, and spares a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return vlserve.load_model(TOY)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    write_scenes(folder, N, seed=3)
    index = json.loads((folder / "scenes.json").read_text())["scenes"]
    return folder, [r["image"] for r in index], [r["caption"] for r in index]


def read_rows(out: Path) -> list[dict]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    return pq.read_table(out).to_pylist()


def make_shard(path: Path, folder: Path, names: list[str], captions: list[str]) -> list[str]:
    """An img2dataset-style shard: <key>.png + <key>.txt, every other sample <key>.json instead."""
    keys = []
    with tarfile.open(path, "w") as tar:
        for i, (name, caption) in enumerate(zip(names, captions)):
            key = f"{path.stem}{i:04d}"
            extra = ("txt", caption.encode()) if i % 2 else ("json", json.dumps({"caption": caption}).encode())
            for ext, data in (("png", (folder / name).read_bytes()), extra):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            keys.append(key)
    return keys


def test_the_command_names_every_job():
    assert JOB_NAMES == tuple(JOBS)


def test_folder_caption_to_jsonl_equals_the_pipeline_and_records_bad_items(tmp_path, model, scenes):
    folder, names, _ = scenes
    src = tmp_path / "images"
    (src / "sub").mkdir(parents=True)
    for name in names:
        (src / "sub" / name).write_bytes((folder / name).read_bytes())
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "captions.jsonl"
    summary = run_bulk("caption", src, out, model, batch_size=3, progress=False)
    assert summary["rows_written"] == N + 1 and summary["errors"] == 1 and summary["input_kind"] == "folder"
    rows = {r["key"]: r for r in read_rows(out)}
    assert rows["broken.png"]["error"].startswith("invalid_image:") and "caption" not in rows["broken.png"]
    expected = model.caption([folder / n for n in names])
    for name, caps in zip(names, expected):
        row = rows[f"sub/{name}"]
        assert row["error"] is None and row["caption"] == caps[0].text
        assert row["logprob"] == pytest.approx(caps[0].logprob, abs=1e-4)
    # a second run finds everything done
    again = run_bulk("caption", src, out, model, batch_size=3, progress=False)
    assert again["rows_written"] == 0 and again["done_before"] == N + 1
    assert len(read_rows(out)) == N + 1


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_manifest_score_pairs_equal_the_pipeline_diagonal(tmp_path, model, scenes, suffix):
    folder, names, captions = scenes
    texts = [captions[(i + 1) % N] if i % 3 == 0 else captions[i] for i in range(N)]  # some mismatched
    rows = [{"key": f"k{i}", "image": str(folder / n), "text": t} for i, (n, t) in enumerate(zip(names, texts))]
    bad = [{"key": "missing", "image": "nowhere.png", "text": "a red circle"},
           {"key": "long", "image": str(folder / names[0]), "text": "red " * 2000},
           {"key": "untexted", "image": str(folder / names[0]), "text": ""}]
    manifest = tmp_path / f"manifest{suffix}"
    if suffix == ".jsonl":
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + bad))
    elif suffix == ".csv":
        with manifest.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["key", "image", "text"])
            writer.writeheader()
            writer.writerows(rows + bad)
    else:  # Parquet carries the image bytes themselves
        table = [r | {"image": Path(r["image"]).read_bytes()} for r in rows]
        pq.write_table(pa.Table.from_pylist(table + bad[1:]), manifest)
        bad = bad[1:]
    out = tmp_path / "scores.parquet"
    summary = run_bulk("score", manifest, out, model, batch_size=4, part_rows=5, progress=False)
    assert summary["input_kind"] == "manifest" and summary["errors"] == len(bad)
    got = {r["key"]: r for r in read_rows(out)}
    assert len(got) == N + len(bad) and len(list(out.glob("part-*.parquet"))) == -(-(N + len(bad)) // 5)
    kinds = {"missing": "not_found", "long": "text_too_long", "untexted": "invalid_input"}
    assert {b["key"]: got[b["key"]]["error"].split(":")[0] for b in bad} == {b["key"]: kinds[b["key"]] for b in bad}
    full = model.score([folder / n for n in names], texts)
    for i in range(N):
        assert got[f"k{i}"]["error"] is None
        assert got[f"k{i}"]["itc"] == pytest.approx(float(full["itc"][i, i]), abs=1e-5)
        assert got[f"k{i}"]["itm"] == pytest.approx(float(full["itm"][i, i]), abs=1e-5)


def test_webdataset_embed_and_capfilt_equal_the_pipeline(tmp_path, model, scenes):
    folder, names, captions = scenes
    shards = tmp_path / "shards"
    shards.mkdir()
    keys = make_shard(shards / "a.tar", folder, names[:5], captions[:5]) \
        + make_shard(shards / "b.tar", folder, names[5:], captions[5:])
    images = [folder / n for n in names]

    out = tmp_path / "embeddings"
    assert run_bulk("embed", shards, out, model, batch_size=3, progress=False)["input_kind"] == "webdataset"
    got = {r["key"]: r for r in read_rows(out)}
    assert list(got) == keys and all(r["modality"] == "image" for r in got.values())
    torch.testing.assert_close(torch.tensor([got[k]["embedding"] for k in keys]), model.embed_images(images),
                               atol=1e-5, rtol=0)

    options = Options(generation={"seed": 7}, num_synthetic=2)
    out = tmp_path / "capfilt.jsonl"
    run_bulk("capfilt", shards, out, model, batch_size=3, options=options, progress=False)
    got = {r["key"]: r for r in read_rows(out)}
    expected = model.capfilt(images, [[c] for c in captions], num_synthetic=2, seed=7)
    for key, cands in zip(keys, expected):
        row = got[key]
        assert row["captions"] == [c.text for c in cands] and row["sources"] == ["web", "synthetic", "synthetic"]
        assert row["itm"] == pytest.approx([c.itm for c in cands], abs=1e-5)
        assert row["kept_captions"] == [c.text for c in cands if c.kept]


def test_embed_texts_of_a_manifest(tmp_path, model, scenes):
    _, _, captions = scenes
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"caption": c}) + "\n" for c in captions[:3]))
    out = tmp_path / "text.jsonl"
    run_bulk("embed", manifest, out, model, options=Options(modality="text"), progress=False)
    rows = read_rows(out)
    assert [r["key"] for r in rows] == ["0", "1", "2"]  # no key column: the row number
    torch.testing.assert_close(torch.tensor([r["embedding"] for r in rows]), model.embed_texts(captions[:3]),
                               atol=1e-5, rtol=0)

    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps({"key": "x", "text": c}) + "\n" for c in captions[:2]))
    summary = run_bulk("embed", twice, tmp_path / "twice-out.jsonl", model, options=Options(modality="text"),
                       progress=False)
    assert summary["rows_written"] == 1 and summary["duplicate_keys"] == 1  # the first row of a key stands


def test_a_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text('{"key": "a", "error": null}\n{"key": "b", "err')
    writer = JsonlWriter(out)
    assert writer.done == {"a"}
    writer.write([{"key": "b", "error": None}])
    writer.close()
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == ["a", "b"]


def test_progress_line_has_throughput_and_eta():
    stream = io.StringIO()
    bar = Progress("caption", total=10, already=2, stream=stream, every=0)
    bar.update([{"key": "x", "error": None}, {"key": "y", "error": "invalid_image: no"}])
    line = stream.getvalue()
    assert line.startswith("\rcaption: 4/10 rows (1 errors, 2 done before)") and "items/s ETA" in line


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_killed_mid_run_the_rerun_does_no_item_twice_and_loses_none(tmp_path, model, scenes, suffix):
    """The shard reaches the first run through a FIFO, so the test decides how far it gets:
    half the samples, then SIGKILL once rows are durable; the rerun reads the whole shard."""
    folder, names, captions = scenes
    shard = tmp_path / "full.tar"
    keys = make_shard(shard, folder, names, captions)
    with tarfile.open(shard) as tar:  # the byte offset of the 6th sample's first member
        cut = [m for m in tar.getmembers()][2 * 6].offset
    fifo = tmp_path / "piped" / "full.tar"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    out = tmp_path / f"captions{suffix}"
    command = [sys.executable, "-m", "vlserve.cli", "bulk", "caption", None, "--out", str(out),
               "--batch-size", "2", "--part-rows", "2", "--quiet", "--model", str(TOY)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command[:5] + [str(fifo)] + command[6:], env=env, stderr=subprocess.PIPE)
    with open(fifo, "wb") as pipe:  # blocks until the job opens its input
        pipe.write(shard.read_bytes()[:cut])
        pipe.flush()
        deadline = time.monotonic() + 120
        while (not out.exists() or len(read_rows(out)) < 4) and first.poll() is None:
            assert time.monotonic() < deadline, "no rows were written"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read().decode()
    partial = [r["key"] for r in read_rows(out)]
    assert 4 <= len(partial) < len(keys)

    second = subprocess.run(command[:5] + [str(shard)] + command[6:], env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stderr.decode()
    summary = json.loads(second.stdout)
    assert summary["done_before"] == len(partial) and summary["rows_written"] == len(keys) - len(partial)
    rows = read_rows(out)
    assert sorted(r["key"] for r in rows) == sorted(keys)  # every key exactly once

    whole = tmp_path / f"whole{suffix}"
    run_bulk("caption", shard, whole, model, batch_size=2, progress=False)
    expected = {r["key"]: r for r in read_rows(whole)}
    for row in rows:
        assert row["error"] is None and row["caption"] == expected[row["key"]]["caption"]
        assert row["logprob"] == pytest.approx(expected[row["key"]]["logprob"], abs=1e-4)


def test_a_damaged_shard_and_a_bad_manifest_line_are_rows_with_errors(tmp_path, model, scenes):
    folder, names, captions = scenes
    shards = tmp_path / "shards"
    shards.mkdir()
    keys = make_shard(shards / "a.tar", folder, names[:4], captions[:4])
    whole = (shards / "a.tar").read_bytes()
    with tarfile.open(shards / "a.tar") as tar:  # cut inside the 3rd sample's image
        cut = tar.getmembers()[4].offset_data + 100
    (shards / "a.tar").write_bytes(whole[:cut])
    out = tmp_path / "out.jsonl"
    run_bulk("embed", shards, out, model, progress=False)
    rows = {r["key"]: r for r in read_rows(out)}
    assert [k for k in rows if rows[k]["error"] is None] == keys[:2]
    assert rows["a.tar"]["error"].startswith("invalid_shard:")

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(folder / names[0])}) + "\n{not json\n")
    run_bulk("embed", manifest, tmp_path / "m-out.jsonl", model, progress=False)
    rows = read_rows(tmp_path / "m-out.jsonl")
    assert rows[0]["error"] is None and rows[1]["key"] == "1" and "line 2 is not JSON" in rows[1]["error"]
