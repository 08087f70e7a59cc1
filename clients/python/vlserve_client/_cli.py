"""`vlserve-client`: call a running vlserve from the shell; JSON on stdout.

    vlserve-client caption cat.jpg dog.png --num-beams 3
    vlserve-client vqa cat.jpg "what animal is this?"
    vlserve-client score cat.jpg "a cat" "a dog" --heads itc itm
"""

from __future__ import annotations

import argparse
import json
import sys

from ._client import Client
from ._exceptions import VlserveError


def _caption(c: Client, a):
    gen = {k: v for k, v in (("max_new_tokens", a.max_new_tokens), ("num_beams", a.num_beams),
                             ("do_sample", a.do_sample or None), ("seed", a.seed)) if v is not None}
    return c.caption(a.images, model=a.model, prompt=a.prompt, num_captions=a.num_captions, **gen)


def _vqa(c: Client, a):
    return c.vqa(a.image, a.question, candidates=a.candidates, mode=a.mode, model=a.model)


def _score(c: Client, a):
    return c.score(a.image, a.texts, heads=a.heads, model=a.model)


def _rank(c: Client, a):
    return c.rank(query_image=a.image, candidate_texts=a.texts, top_k=a.top_k, reranker=a.reranker, model=a.model)


def _embed(c: Client, a):
    return c.embed(images=a.image or None, texts=a.text or None, model=a.model)


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
    s.set_defaults(run=_vqa)

    s = sub.add_parser("score", help="image-text match scores")
    s.add_argument("image")
    s.add_argument("texts", nargs="+")
    s.add_argument("--heads", nargs="+", choices=["itc", "itm"])
    s.set_defaults(run=_score)

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
        run=lambda c, a: {"models": [m.model_dump(mode="json") for m in c.models()]})
    sub.add_parser("health", help="liveness and readiness").set_defaults(
        run=lambda c, a: {"live": c.health(), "ready": c.ready()})
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
    print(json.dumps(out))  # one line, as curl gives it: pipe to jq to read
    return 0
