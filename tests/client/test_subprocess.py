"""The SDK and its CLI against `vlserve serve` running as a real process on a loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vlserve_client as vc
from tests.client.conftest import BLUE, RED
from tests.e2e.server_process import ServerProcess, free_port
from vlserve_client._cli import main


@pytest.fixture(scope="module")
def server(client_repo):
    with ServerProcess("--model-repo", str(client_repo)) as server:
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    (root / "red.png").write_bytes(RED)
    (root / "blue.png").write_bytes(BLUE)
    return root / "red.png", root / "blue.png"


def test_sync_client(server, images):
    red, blue = images
    with vc.Client(server.url) as client:
        assert client.health() and client.ready()
        assert [m.name for m in client.models()] == ["toy"]
        caps = client.caption([red, blue], num_captions=2, num_beams=2)
        assert [len(c) for c in caps.captions] == [2, 2] and caps.usage.images == 2
        assert len(client.embed(texts=["a", "b"]).text_embeddings) == 2
        assert len(client.score(red, ["a", "b", "c"], heads="itm").itm[0]) == 3
        assert len(client.rank(query_image=red, candidate_texts=["a", "b", "c"], top_k=2).results) == 2
        answer = client.vqa(red, "what color", candidates=["red", "blue"]).answers[0]
        assert {r.text for r in answer.ranked} == {"red", "blue"}
        assert [r.ok for r in client.embed_many([red, blue, red / "missing"])] == [True, True, False]


@pytest.mark.anyio
async def test_async_client(server, images):
    async with vc.AsyncClient(server.url) as client:
        await client.wait_ready(timeout=10)
        got = await client.vqa(list(images), ["what color", "how many"])
    want = vc.Client(server.url).vqa(list(images), ["what color", "how many"])
    assert [a.tokens for a in got.answers] == [a.tokens for a in want.answers] and len(want.answers) == 2


def test_nothing_listening_is_a_connection_error():
    client = vc.Client(f"http://127.0.0.1:{free_port()}", retry=vc.Retry(max_retries=1, backoff=0.01))
    with pytest.raises(vc.APIConnectionError):
        client.caption(RED)
    with pytest.raises(vc.APITimeoutError, match="not ready"):
        client.wait_ready(timeout=0.3, interval=0.05)


def run_cli(capsys, *argv) -> tuple[int, object]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err


def test_cli(server, images, capsys):
    red, blue = map(str, images)
    code, out = run_cli(capsys, "--url", server.url, "caption", red, blue, "--max-new-tokens", "3")
    assert code == 0 and len(out["captions"]) == 2 and len(out["captions"][0][0]["tokens"]) <= 3
    code, out = run_cli(capsys, "--url", server.url, "vqa", red, "what color?", "--candidates", "red", "blue")
    assert code == 0 and {r["text"] for r in out["answers"][0]["ranked"]} == {"red", "blue"}
    code, out = run_cli(capsys, "--url", server.url, "score", red, "a", "b", "--heads", "itc", "itm")
    assert code == 0 and len(out["itc"][0]) == len(out["itm"][0]) == 2
    code, out = run_cli(capsys, "--url", server.url, "rank", red, "a", "b", "c", "--top-k", "1")
    assert code == 0 and len(out["results"]) == 1
    code, out = run_cli(capsys, "--url", server.url, "embed", "--text", "a", "--image", red)
    assert code == 0 and out["dim"] == len(out["text_embeddings"][0])
    code, out = run_cli(capsys, "--url", server.url, "health")
    assert code == 0 and out == {"live": True, "ready": True}
    code, err = run_cli(capsys, "--url", server.url, "--model", "nope", "caption", red)
    assert code == 1 and "model_not_found" in err


def test_cli_vqa_decoding_options(server, images, capsys):
    red = str(images[0])
    code, out = run_cli(capsys, "--url", server.url, "vqa", red, "what color?", "--mode", "generate",
                        "--min-new-tokens", "2", "--max-new-tokens", "2", "--num-beams", "2")
    assert code == 0 and len(out["answers"][0]["tokens"]) == 2, out
    code, out = run_cli(capsys, "--url", server.url, "vqa", red, "what color?", "--mode", "rank",
                        "--candidates", "red", "blue", "green", "--top-k", "2")
    assert code == 0 and len(out["answers"][0]["ranked"]) == 2, out
    code, out = run_cli(capsys, "--url", server.url, "vqa", red, "what color?", "--rank-answers")
    assert code == 0 and {r["text"] for r in out["answers"][0]["ranked"]} == {"red", "blue", "yes"}, out


def test_cli_capfilt(server, images, capsys):
    red, blue = map(str, images)
    common = ("--num-synthetic", "1", "--min-new-tokens", "2", "--max-new-tokens", "3", "--seed", "0")
    code, out = run_cli(capsys, "--url", server.url, "capfilt", red, blue, "--texts", "a red thing",
                        "--texts", "x", "y", "--threshold", "0", *common)
    assert code == 0, out
    assert [[(c["source"], c["kept"]) for c in r] for r in out["results"]] == [
        [("web", True), ("synthetic", True)], [("web", True), ("web", True), ("synthetic", True)]]
    assert len(out["results"][0][1]["text"].split()) <= 3
    code, out = run_cli(capsys, "--url", server.url, "capfilt", red, blue, "--texts", "one", "--threshold", "1",
                        *common)  # one --texts: the same web captions for every image
    assert code == 0 and [[c["text"] for c in r if c["source"] == "web"] for r in out["results"]] == [["one"]] * 2
    assert not any(c["kept"] for r in out["results"] for c in r if c["itm"] < 1)
    code, err = run_cli(capsys, "--url", server.url, "capfilt", red, blue, red, "--texts", "a", "--texts", "b")
    assert code == 1 and "--texts given 2 times for 3 images" in err


def test_cli_pretty(server, images, capsys):
    red = str(images[0])
    assert main(["--url", server.url, "score", red, "a b", "c", "--heads", "itc", "--pretty"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model  toy" and lines[2].split() == ["text", "itc"] and set(lines[3]) == {"-", " "}
    assert [line.split()[:-1] for line in lines[4:]] == [["a", "b"], ["c"]]
    assert all(len(line.split()[-1].split(".")[1]) == 4 for line in lines[4:])
    assert main(["--url", server.url, "models", "--pretty"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["name", "family", "state", "tasks", "device", "dtype", "load_seconds"]
    assert lines[3].split()[:3] == ["toy", "blip", "ready"]
    assert main(["--url", server.url, "embed", "--text", "a", "--pretty"]) == 0
    assert "dim 16 [" in capsys.readouterr().out
    assert main(["--url", server.url, "health", "--pretty"]) == 0
    assert capsys.readouterr().out.split() == ["live", "true", "ready", "true"]


def test_console_script(server, images):
    exe = shutil.which("vlserve-client", path=str(Path(sys.executable).parent))
    assert exe, "pip install ./clients/python puts vlserve-client beside python"
    out = subprocess.run([exe, "models"], env={"VLSERVE_URL": server.url}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["models"][0]["state"] == "ready"
