"""`vlserve-client`: call a running vlserve from the shell; JSON on stdout (tables with --pretty).

    vlserve-client caption cat.jpg dog.png --num-beams 3
    vlserve-client vqa cat.jpg "what animal is this?" --num-beams 3 --max-new-tokens 5
    vlserve-client score cat.jpg "a cat" "a dog" --heads itc itm --pretty
    vlserve-client capfilt cat.jpg dog.jpg --texts "my cat" --texts "a dog" "my holiday" --num-synthetic 2
"""

from __future__ import annotations

import argparse
import json
import sys

from ._client import Client
from ._exceptions import VlserveError
from ._pretty import render


def _caption(c: Client, a):
    gen = {k: v for k, v in (("max_new_tokens", a.max_new_tokens), ("num_beams", a.num_beams),
                             ("do_sample", a.do_sample or None), ("seed", a.seed)) if v is not None}
    return c.caption(a.images, model=a.model, prompt=a.prompt, num_captions=a.num_captions, **gen)


def _options(a, *names: str) -> dict:
    """The named options the user gave (the server's defaults stand for the rest)."""
    return {n: getattr(a, n) for n in names if getattr(a, n) is not None}


def _vqa(c: Client, a):
    return c.vqa(a.image, a.question, candidates=a.candidates, model=a.model, **_options(
        a, "mode", "rank_answers", "top_k", "max_new_tokens", "min_new_tokens", "num_beams"))


def _capfilt(c: Client, a):
    texts = a.texts
    if texts is not None and len(texts) not in (1, len(a.images)):
        raise ValueError(f"--texts given {len(texts)} times for {len(a.images)} images: give it once "
                         "(the same web captions for every image) or once per image")
    if texts is not None and len(texts) == 1:
        texts = texts * len(a.images)
    return c.capfilt(a.images, texts, model=a.model, **_options(
        a, "num_synthetic", "threshold", "max_new_tokens", "min_new_tokens", "top_p", "seed", "captioner", "filter"))


def _score(c: Client, a):
    return c.score(a.image, a.texts, heads=a.heads, model=a.model)


def _rank(c: Client, a):
    return c.rank(query_image=a.image, candidate_texts=a.texts, top_k=a.top_k, reranker=a.reranker, model=a.model)


def _embed(c: Client, a):
    return c.embed(images=a.image or None, texts=a.text or None, model=a.model)


def _score_table(out: dict, a) -> dict:
    """One row per text (the CLI scores one image)."""
    return {"model": out["model"], "text": a.texts, **{h: out[h][0] for h in ("itc", "itm") if h in out}}


def _models_table(out: dict, a) -> dict:
    keep = ("name", "family", "state", "tasks", "device", "dtype", "load_seconds", "error")
    return {"models": [{k: m.get(k) for k in keep} for m in out["models"]]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlserve-client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server address (default: $VLSERVE_URL or http://localhost:8000)")
    p.add_argument("--api-key", help="API key (default: $VLSERVE_API_KEY)")
    p.add_argument("--model", help="model name (default: the one serving the task)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    p.add_argument("--send-urls", action="store_true", help="let the server fetch http(s) images itself")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("caption", help="caption images")
    s.add_argument("images", nargs="+", help="paths or URLs")
    s.add_argument("--prompt")
    s.add_argument("--num-captions", type=int)
    s.add_argument("--max-new-tokens", type=int)
    s.add_argument("--num-beams", type=int)
    s.add_argument("--do-sample", action="store_true")
    s.add_argument("--seed", type=int)
    s.set_defaults(run=_caption)

    s = sub.add_parser("vqa", help="answer a question about an image")
    s.add_argument("image")
    s.add_argument("question")
    s.add_argument("--candidates", nargs="+", help="rank these answers instead of generating one")
    s.add_argument("--mode", choices=["generate", "rank", "classify"],
                   help="how to answer (default: rank with --candidates, else the model's own choice)")
    s.add_argument("--rank-answers", action="store_true", default=None, help="rank the model's own answer list")
    s.add_argument("--top-k", type=int, help="ranked answers shown, best first (rank and classify)")
    s.add_argument("--max-new-tokens", type=int)
    s.add_argument("--min-new-tokens", type=int)
    s.add_argument("--num-beams", type=int)
    s.set_defaults(run=_vqa)

    s = sub.add_parser("capfilt", help="BLIP's CapFilt: sample captions, judge them and web captions by ITM")
    s.add_argument("images", nargs="+", help="paths or URLs")
    s.add_argument("--texts", nargs="+", action="append",
                   help="web captions to judge; once for every image, or repeated: once per image, in order")
    s.add_argument("--num-synthetic", type=int, help="captions sampled per image (default 1)")
    s.add_argument("--threshold", type=float, help="ITM probability a caption needs to be kept (default 0.5)")
    s.add_argument("--max-new-tokens", type=int)
    s.add_argument("--min-new-tokens", type=int)
    s.add_argument("--top-p", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--captioner", help="the model that samples the captions (default: --model)")
    s.add_argument("--filter", help="the model whose ITM judges them (default: --model)")
    s.set_defaults(run=_capfilt)

    s = sub.add_parser("score", help="image-text match scores")
    s.add_argument("image")
    s.add_argument("texts", nargs="+")
    s.add_argument("--heads", nargs="+", choices=["itc", "itm"])
    s.set_defaults(run=_score, table=_score_table)

    s = sub.add_parser("rank", help="rank texts for an image (ITC shortlist, ITM re-rank)")
    s.add_argument("image")
    s.add_argument("texts", nargs="+")
    s.add_argument("--top-k", type=int)
    s.add_argument("--reranker", help="the model whose ITM re-ranks the shortlist (default: --model)")
    s.set_defaults(run=_rank)

    s = sub.add_parser("embed", help="ITC embeddings")
    s.add_argument("--image", action="append", help="an image (repeatable)")
    s.add_argument("--text", action="append", help="a text (repeatable)")
    s.set_defaults(run=_embed)

    sub.add_parser("models", help="the models the server holds").set_defaults(
        run=lambda c, a: {"models": [m.model_dump(mode="json") for m in c.models()]}, table=_models_table)
    sub.add_parser("health", help="liveness and readiness").set_defaults(
        run=lambda c, a: {"live": c.health(), "ready": c.ready()})
    for command in sub.choices.values():
        command.add_argument("--pretty", action="store_true", help="print plain-text tables instead of JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout, send_urls=args.send_urls) as client:
            out = args.run(client, args)
    except (VlserveError, OSError, ValueError) as exc:
        print(f"vlserve-client: error: {exc}", file=sys.stderr)
        return 1
    if hasattr(out, "model_dump"):
        out = out.model_dump(mode="json", exclude_none=True)
    if args.pretty:
        print(render(getattr(args, "table", lambda o, a: o)(out, args)))
    else:
        print(json.dumps(out))  # one line, as curl gives it: pipe to jq to read
    return 0
