"""OpenAI chat completions over one image (issue 15), driven by the `openai` SDK: no text or a
describe instruction -> the caption /v1/caption gives; other text -> a caption continuing it;
a question -> the answer /v1/vqa gives (generated on BLIP, classified on BEiT-3); decoding
options, stop, finish_reason, usage; streaming (the same text, token by token, each chunk
sent before the caption is done); and what is refused, by name."""

import asyncio

import pytest

from tests.api.conftest import b64, png
from tests.api.test_openai_embeddings import data_uri, sdk

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.anyio
RED = (200, 30, 30)

@pytest.fixture
def live(live3):
    return live3  # this module's tests run on the three families



def message(text=None, images=(RED,)):
    parts = [{"type": "image_url", "image_url": {"url": data_uri(c)}} for c in images]
    return [{"role": "user", "content": ([{"type": "text", "text": text}] if text is not None else []) + parts}]


async def v1(live, path, **body):
    r = await live.client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("family", ["blip", "coca", "beit3"])
@pytest.mark.parametrize("text", [None, "Describe this image."])
async def test_a_caption_equals_the_caption_route(live, family, text):
    out = await sdk(live).chat.completions.create(model=family, messages=message(text), max_tokens=6)
    want = await v1(live, "/v1/caption", model=family, images=[b64(png(RED))], max_new_tokens=6)
    cap = want["captions"][0][0]
    assert out.object == "chat.completion" and out.model == family and len(out.choices) == 1
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content == cap["text"]
    assert out.choices[0].finish_reason == ("length" if len(cap["tokens"]) == 6 else "stop")
    assert out.usage.completion_tokens == len(cap["tokens"])
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


async def test_other_text_is_the_caption_prompt(live):
    out = await sdk(live).chat.completions.create(model="blip", messages=message("a picture of"), max_tokens=5)
    want = await v1(live, "/v1/caption", model="blip", images=[b64(png(RED))], prompt="a picture of",
                    max_new_tokens=5)
    assert out.choices[0].message.content == want["captions"][0][0]["text"] and out.usage.prompt_tokens > 0


@pytest.mark.parametrize("family", ["blip", "beit3"])
async def test_a_question_is_answered_as_the_vqa_route_answers(live, family):
    out = await sdk(live).chat.completions.create(model=family, messages=message("what color is it?"))
    want = await v1(live, "/v1/vqa", model=family, images=[b64(png(RED))], questions=["what color is it?"])
    assert out.choices[0].message.content == want["answers"][0]["text"]


async def test_sampling_n_seed_and_stop(live):
    client = sdk(live)
    kwargs = dict(model="blip", messages=message(), n=3, temperature=0.9, top_p=0.95, seed=5, max_tokens=8)
    a = await client.chat.completions.create(**kwargs)
    b = await client.chat.completions.create(**kwargs)
    want = await v1(live, "/v1/caption", model="blip", images=[b64(png(RED))], num_captions=3, do_sample=True,
                    temperature=0.9, top_p=0.95, seed=5, max_new_tokens=8)
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices] == [c["text"] for c in want["captions"][0]]
    word = next((w for t in texts for w in t.split()[1:]), None)
    if word is not None:  # stop cuts the text where the stop string first appears
        cut = await client.chat.completions.create(**kwargs, stop=[word])
        for got, full in zip(cut.choices, texts):
            assert got.message.content == (full[: full.find(word)] if word in full else full)
            assert got.finish_reason == "stop" if word in full else True


@pytest.mark.parametrize("change,param", [
    ({"messages": [{"role": "system", "content": "be brief"}] + message()}, "messages"),
    ({"messages": message(images=(RED, RED))}, "messages[0].content"),
    ({"messages": message(images=())}, "messages[0].content"),
    ({"logprobs": True, "stream": True}, "logprobs"),
    ({"logprobs": True, "messages": message("what is it?")}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": message("what is it?"), "n": 2}, "n"),
    ({"model": "coca", "messages": message("what is it?")}, "model"),
])
async def test_refused_by_name(live, change, param):
    body = {"model": "blip", "messages": message()} | change
    r = await live.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


async def collect(stream) -> tuple[dict, dict, object]:
    texts, finish, usage = {}, {}, None
    async for event in stream:
        usage = event.usage or usage
        for c in event.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return texts, finish, usage


@pytest.mark.parametrize("kwargs", [dict(model="blip"), dict(model="beit3", max_tokens=5),
                                    dict(model="blip", n=2, temperature=0.8, seed=3, max_tokens=7),
                                    dict(model="blip", messages=message("what color is it?"))])
async def test_streamed_text_equals_the_whole_answer(live, kwargs):
    client = sdk(live)
    kwargs = dict(messages=message()) | kwargs
    whole = await client.chat.completions.create(**kwargs)
    texts, finish, usage = await collect(await client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finish == {c.index: c.finish_reason for c in whole.choices}
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_stop_holds_back_a_partial_stop_string_while_streaming():
    from vlserve.api.chat_stream import TextStream

    words = ["a", " small", " red", " square"]
    stream = TextStream(1, lambda toks: "".join(words[t] for t in toks), stops=[" red sq"])
    sent = [stream.add(0, i, i) for i in range(4)]
    assert sent == ["a", " small", "", ""]  # " red" could begin the stop string; then it does
    assert stream.finish(0, "a small red square") == ("", True)


async def test_each_chunk_leaves_before_the_caption_is_done():
    from starlette.responses import StreamingResponse

    from vlserve.api.chat_stream import stream_response

    release = asyncio.Event()

    async def run(listener):
        listener(0, 0, 7, -0.5)  # as the decode loop does, from its thread
        await asyncio.wait_for(release.wait(), 5)  # finishes only after the client saw the token
        return [("x", [7])]

    response: StreamingResponse = stream_response("m", 1, run, decode=lambda toks: "x" * len(toks), stops=[],
                                                  limit=10, include_usage=False, prompt_tokens=0)
    events = response.body_iterator
    assert b'"role": "assistant"' in await anext(events)
    assert b'"content": "x"' in await anext(events)
    release.set()
    rest = [e async for e in events]
    assert b'"finish_reason": "stop"' in rest[0] and rest[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("family", ["blip", "coca", "beit3"])
async def test_logprobs_of_a_caption_sum_to_the_captions_logprob(live, family):
    out = await sdk(live).chat.completions.create(model=family, messages=message(), max_tokens=3, logprobs=True,
                                                  top_logprobs=0)
    want = (await v1(live, "/v1/caption", model=family, images=[b64(png(RED))], max_new_tokens=3))["captions"][0][0]
    entries = out.choices[0].logprobs.content
    assert len(entries) == len(want["tokens"]) and all(e.logprob <= 0 and e.top_logprobs == [] for e in entries)
    if out.choices[0].finish_reason == "length":  # no end-of-text token in the caption's log-prob
        assert sum(e.logprob for e in entries) == pytest.approx(want["logprob"], abs=1e-4)
    else:
        assert sum(e.logprob for e in entries) >= want["logprob"] - 1e-4
