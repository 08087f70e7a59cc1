"""Retries against httpx.MockTransport: 503 + Retry-After then 200, giving up, connection
errors, what is never retried; and how error responses map onto the exception tree."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

import vlserve_client as vc
from vlserve_client._retry import parse_retry_after

OK = {"model": "toy", "captions": [[{"text": "a red square", "tokens": [5, 6], "logprob": -1.5}]],
      "usage": {"images": 1, "generated_tokens": 2}}
BUSY = {"error": {"type": "queue_full", "message": "the vision queue is full", "param": None}}


class Script:
    """Answers requests from a list, in turn, and remembers them."""

    def __init__(self, *answers):
        self.answers, self.requests = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def busy(retry_after="1") -> httpx.Response:
    return httpx.Response(503, json=BUSY, headers={"Retry-After": retry_after} if retry_after else {})


def sync_client(script, sleeps, **kwargs) -> vc.Client:
    client = vc.Client("http://vl", transport=httpx.MockTransport(script), **kwargs)
    client._sleep = sleeps.append  # record the waits instead of waiting
    return client


def test_503_with_retry_after_then_200():
    script, sleeps = Script(busy("2"), httpx.Response(200, json=OK)), []
    got = sync_client(script, sleeps).caption(b"png")
    assert got.captions[0][0].text == "a red square"
    assert sleeps == [2.0] and len(script.requests) == 2
    assert script.requests[0].content == script.requests[1].content  # the same body again


@pytest.mark.anyio
async def test_async_503_then_200():
    script, sleeps = Script(busy("1"), httpx.Response(200, json=OK)), []

    async def record(seconds):
        sleeps.append(seconds)

    async with vc.AsyncClient("http://vl", transport=httpx.MockTransport(script)) as client:
        client._sleep = record
        assert (await client.caption(b"png")).usage.generated_tokens == 2
    assert sleeps == [1.0] and len(script.requests) == 2


def test_gives_up_after_max_retries():
    script, sleeps = Script(busy(), busy(), busy(), busy()), []
    with pytest.raises(vc.ServiceUnavailableError) as info:
        sync_client(script, sleeps, max_retries=2).caption(b"png")
    assert len(script.requests) == 3 and sleeps == [1.0, 1.0]
    assert info.value.type == "queue_full" and info.value.retry_after == 1.0 and info.value.status_code == 503


def test_retry_after_beyond_max_delay_is_not_waited_for():
    script, sleeps = Script(busy("600")), []
    with pytest.raises(vc.ServiceUnavailableError) as info:
        sync_client(script, sleeps).caption(b"png")
    assert sleeps == [] and info.value.retry_after == 600


def test_backoff_without_retry_after_grows_with_jitter():
    script, sleeps = Script(busy(None), busy(None), busy(None), httpx.Response(200, json=OK)), []
    sync_client(script, sleeps, retry=vc.Retry(max_retries=3, backoff=1.0, max_delay=3.0)).caption(b"png")
    # equal jitter: each wait lies in [d/2, d] for d = 1, 2, 3 (capped)
    assert [d / 2 <= s <= d for s, d in zip(sleeps, [1, 2, 3])] == [True] * 3
    assert vc.Retry(max_retries=5, jitter=False, backoff=0.5).delay(2) == 2.0


def test_connection_errors_are_retried_then_raised():
    script, sleeps = Script(*[httpx.ConnectError("refused")] * 3), []
    with pytest.raises(vc.APIConnectionError) as info:
        sync_client(script, sleeps, max_retries=2).models()
    assert len(script.requests) == 3 and len(sleeps) == 2
    assert not isinstance(info.value, vc.APITimeoutError) and isinstance(info.value.__cause__, httpx.ConnectError)

    script = Script(httpx.RemoteProtocolError("server closed"), httpx.Response(200, json={"models": []}))
    assert sync_client(script, []).models() == []


@pytest.mark.parametrize("answer", [httpx.ReadTimeout("slow"), httpx.Response(504, json={"error": {
    "type": "deadline_exceeded", "message": "too late", "param": None}}), httpx.Response(400, json={})])
def test_timeouts_and_client_errors_are_not_retried(answer):
    script = Script(answer, httpx.Response(200, json=OK))
    with pytest.raises((vc.APITimeoutError, vc.DeadlineExceededError, vc.BadRequestError)):
        sync_client(script, []).caption(b"png")
    assert len(script.requests) == 1


def test_probes_are_never_retried():
    script = Script(busy())
    assert sync_client(script, []).ready() is False and len(script.requests) == 1


@pytest.mark.parametrize("status, error", [(400, vc.BadRequestError), (401, vc.AuthenticationError),
                                           (404, vc.NotFoundError), (413, vc.PayloadTooLargeError),
                                           (415, vc.UnsupportedMediaTypeError), (422, vc.UnprocessableEntityError),
                                           (500, vc.InternalServerError), (502, vc.InternalServerError),
                                           (504, vc.DeadlineExceededError), (409, vc.APIStatusError)])
def test_status_maps_to_exception(status, error):
    body = {"error": {"type": "some_type", "message": "what went wrong", "param": "texts[1]"}}
    with pytest.raises(error) as info:
        sync_client(Script(httpx.Response(status, json=body)), []).caption(b"png")
    e = info.value
    assert type(e) is error and (e.status_code, e.type, e.message, e.param) == (status, "some_type",
                                                                                 "what went wrong", "texts[1]")
    assert "texts[1]" in str(e)


def test_non_json_error_body_keeps_its_text():
    with pytest.raises(vc.InternalServerError) as info:
        sync_client(Script(httpx.Response(502, text="<html>bad gateway</html>")), []).models()
    assert info.value.type is None and "bad gateway" in info.value.message


def test_headers_and_body():
    script = Script(httpx.Response(200, json=OK))
    sync_client(script, [], api_key="k1", headers={"X-Trace": "7"}).caption(
        "data:image/png;base64,AAAA", model="toy", num_beams=3, seed=0)
    request = script.requests[0]
    assert request.headers["authorization"] == "Bearer k1" and request.headers["x-trace"] == "7"
    assert request.url == "http://vl/v1/caption"
    # only the fields given travel: the server's and the model's defaults apply to the rest
    assert httpx.Response(200, content=request.content).json() == {
        "images": ["data:image/png;base64,AAAA"], "model": "toy", "num_beams": 3, "seed": 0}


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="num_beam"):
        sync_client(Script(), []).caption(b"png", num_beam=3)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(later) <= 30
