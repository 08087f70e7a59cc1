"""Log lines: `--log-format json` (one object per line, uvicorn's lines included) and the
request id in every line of a request, also those written in the preprocessing threads."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from types import SimpleNamespace

import httpx
import pytest

from vlserve import logs
from vlserve.api.middleware import REQUEST_ID

pytestmark = pytest.mark.anyio


@pytest.fixture
def restored_logging():
    """logs.configure rewires the root and uvicorn loggers: put them back for the other tests."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = [(logging.getLogger(n), logging.getLogger(n).handlers[:], logging.getLogger(n).propagate,
              logging.getLogger(n).level) for n in names]
    yield
    for logger, handlers, propagate, level in saved:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)
    logging.captureWarnings(False)


def record(message="hello %s", args=("world",), **extra) -> logging.LogRecord:
    r = logging.getLogger("vlserve.test").makeRecord("vlserve.test", logging.WARNING, __file__, 1, message, args,
                                                      None)
    r.__dict__.update(extra)
    return r


def test_json_lines_hold_time_level_logger_message_and_the_request_id():
    line = json.loads(logs.JsonFormatter().format(record(request_id="req-7")))
    assert {k: line[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "WARNING", "logger": "vlserve.test", "message": "hello world", "request_id": "req-7"}
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record(request_id="-")))  # outside requests
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record(exc_info=sys.exc_info())
    assert "ValueError: boom" in json.loads(logs.JsonFormatter().format(failed))["exception"]


def test_text_lines_show_the_request_id_and_survive_records_without_one():
    text = logs.formatter("text")
    assert "[req-7]: hello world" in text.format(record(request_id="req-7"))
    bare = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)  # made without the factory
    assert "[-]: plain" in text.format(bare)


def test_configure_sends_uvicorns_lines_through_the_same_format(restored_logging):
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    token = REQUEST_ID.set("req-9")
    try:
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/x", "1.1", 200)
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("uvicorn.error").warning("Shutting down")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["logger"], x.get("request_id")) for x in lines] == [("uvicorn.access", "req-9"),
                                                                    ("uvicorn.error", None)]
    assert lines[0]["message"] == '1.2.3.4:5 - "GET /x HTTP/1.1" 200'


def test_the_log_format_setting(monkeypatch):
    from pydantic import ValidationError

    from vlserve.settings import Settings

    assert Settings().log_format == "text"
    monkeypatch.setenv("VLSERVE_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("VLSERVE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings()


def logged_in_thread() -> tuple[str, str]:
    made = record("in a worker", ())
    return made.request_id, threading.current_thread().name


async def test_the_request_id_reaches_the_preprocessing_and_offload_threads(tmp_path):
    from vlserve.api.gateway import Gateway
    from vlserve.scheduling.runner import ScheduledRunner
    from vlserve.settings import Settings

    gateway = Gateway(Settings(model_repo=tmp_path))
    worker = SimpleNamespace(engine=None, limits=SimpleNamespace(max_batch_size=1))
    runner = ScheduledRunner(worker, deadline=0.0, pool=gateway.pool)
    token = REQUEST_ID.set("req-in-thread")
    try:
        in_pool = await gateway.in_thread(logged_in_thread)
        offloaded = await runner.offload(logged_in_thread)
        on_default_pool = await ScheduledRunner(worker, deadline=0.0).offload(logged_in_thread)
    finally:
        REQUEST_ID.reset(token)
        gateway.pool.shutdown()
    assert in_pool[1].startswith("vlserve-preprocess") and offloaded[1].startswith("vlserve-preprocess")
    assert in_pool[0] == offloaded[0] == on_default_pool[0] == "req-in-thread"


def test_serve_log_format_json_writes_only_json_lines(repo):
    from tests.e2e.server_process import ServerProcess

    with ServerProcess("--model-repo", str(repo), "--log-format", "json") as server:
        assert httpx.get(server.url + "/v1/models", headers={"X-Request-ID": "req-json-1"}).status_code == 200
        server.terminate()
        server.proc.wait(30)
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.strip()]
    access = [x for x in lines if x["logger"] == "uvicorn.access" and "/v1/models" in x["message"]]
    assert [x["request_id"] for x in access] == ["req-json-1"]
    assert {"uvicorn.error", "vlserve.repository"} <= {x["logger"] for x in lines}


def test_other_libraries_may_pass_their_own_request_id_outside_requests():
    """Ray Serve's loggers pass `extra={"request_id": ...}`; logging refuses to overwrite an attribute the
    record factory set, so outside a request the factory sets none (and the format shows Serve's)."""
    made = logging.getLogger("ray.serve").makeRecord("ray.serve", logging.INFO, __file__, 1, "call", (), None,
                                                       extra={"request_id": "serve-1"})
    assert made.request_id == "serve-1"
    assert "[serve-1]: call" in logs.formatter("text").format(made)
