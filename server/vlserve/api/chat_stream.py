"""`stream: true` for chat completions: server-sent events as OpenAI sends them, a caption's
text token by token as the decode loop chooses each token (the first as soon as it exists).

The decode loop calls the listener on its own thread; the tokens cross to the event loop
through a queue, and each sample's text so far is decoded again (word pieces can merge) and
sent as the part beyond what was sent. Text that could be the start of a stop string is held
back until it cannot. A question's answer (a few tokens, or a classification) comes as one
chunk. A client that leaves cancels the generation.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi.responses import StreamingResponse

from ..errors import VlserveError


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could begin a stop string."""
    return max((k for s in stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])),
               default=0)


class TextStream:
    """Per sample: the tokens so far, the text sent, whether a stop string ended it."""

    def __init__(self, n: int, decode, stops: list[str]):
        self.decode, self.stops = decode, [s for s in stops if s]
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.sent, self.stopped = [""] * n, [False] * n

    def add(self, sample: int, position: int, token: int) -> str:
        """The new text to send for this token ('' when none yet)."""
        if self.stopped[sample]:
            return ""
        self.tokens[sample] = self.tokens[sample][:position] + [token]
        return self._advance(sample, self.decode(self.tokens[sample]), final=False)

    def finish(self, sample: int, text: str) -> tuple[str, bool]:
        """What is left to send of the final text, and whether a stop string cut it."""
        return self._advance(sample, text, final=True), self.stopped[sample]

    def _advance(self, sample: int, text: str, final: bool) -> str:
        text, stopped = cut_at_stop(text, self.stops)
        if stopped:
            self.stopped[sample] = True
        elif not final:
            text = text[: len(text) - _held_back(text, self.stops)]
        sent = self.sent[sample]
        if self.stopped[sample] and not text.startswith(sent):
            return ""
        if not text.startswith(sent) or len(text) <= len(sent):
            return ""  # a re-decoded prefix changed (merged pieces): wait for it to extend again
        self.sent[sample] = text
        return text[len(sent):]


def sse(payload) -> bytes:
    return f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}\n\n".encode()


def stream_response(model_name: str, n: int, run, *, decode, stops: list[str], limit: int,
                    include_usage: bool, prompt_tokens: int) -> StreamingResponse:
    """`run(listener)` -> awaitable of [(text, tokens)] per choice; work that cannot stream
    (answers) ignores the listener (sample, position, token, log-prob so far)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    texts = TextStream(n, decode, stops)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model_name}

    def chunk(index, delta, finish=None):
        return sse(base | {"choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    def listener(sample, position, token, logprob):  # the decode loop's thread
        loop.call_soon_threadsafe(queue.put_nowait, (sample, position, token))

    async def events():
        work = asyncio.ensure_future(run(listener))
        try:
            for i in range(n):
                yield chunk(i, {"role": "assistant", "content": ""})
            while not (work.done() and queue.empty()):
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, work}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    continue
                sample, position, token = get.result()
                delta = texts.add(sample, position, token)
                if delta:
                    yield chunk(sample, {"content": delta})
            try:
                outs = work.result()
            except VlserveError as exc:
                yield sse({"error": {"type": exc.type, "message": exc.message, "param": exc.param}})
                yield sse("[DONE]")
                return
            completion = 0
            for i, (text, tokens) in enumerate(outs):
                rest, stopped = texts.finish(i, text)
                if rest:
                    yield chunk(i, {"content": rest})
                completion += len(tokens)
                yield chunk(i, {}, "stop" if stopped or len(tokens) < limit else "length")
            if include_usage:
                yield sse(base | {"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                           "completion_tokens": completion,
                                                           "total_tokens": prompt_tokens + completion}})
            yield sse("[DONE]")
        finally:
            work.cancel()  # the client left, or it is over: nothing more to generate

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
