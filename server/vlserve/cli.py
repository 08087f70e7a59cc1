"""The `vlserve` command: serve a repository, one-shot tasks on a model folder (JSON on
stdout, or tables with --pretty), and tools for model folders (export-onnx, merge, shapes)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .engine.generation.params import GenerationOptions
from .errors import InvalidInputError, VlserveError
from .pretty import render
from .settings import default_model_repo


def _model(args):
    from . import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, attention=args.attention)


def _family(folder: str):
    from .repository import registry
    from .repository.spec import ModelSpec

    return registry.family(ModelSpec.from_folder(Path(folder)).family)


def _caption(args):
    kwargs = {k: getattr(args, k) for k in GenerationOptions.model_fields if getattr(args, k) is not None}
    caps = _model(args).caption(args.images, prompt=args.prompt, num_captions=args.num_captions, **kwargs)
    return [{"image": str(p), "captions": [dataclasses.asdict(c) for c in cs]} for p, cs in zip(args.images, caps)]


def _vqa(args):
    answers = _model(args).vqa([args.image], [args.question], candidates=args.candidates or None,
                               num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    return dataclasses.asdict(answers[0])


def _score(args):
    out = _model(args).score([args.image], args.texts, heads=args.heads)
    return {head: m[0].tolist() for head, m in out.items()} | {"texts": args.texts}


def _embed(args):
    model = _model(args)
    out = {"images": [str(i) for i in args.images], "texts": args.texts}
    if args.images:
        out["image_embeddings"] = model.embed_images(args.images).tolist()
    if args.texts:
        out["text_embeddings"] = model.embed_texts(args.texts).tolist()
    return out


def _rank(args):
    """An image query over candidate texts, or (--text) a text query over candidate images."""
    model = _model(args)
    kwargs = dict(text=args.query, candidates=args.candidates) if args.text else \
        dict(image=args.query, candidates=args.candidates)
    ranked = model.rank(**kwargs, top_k=args.top_k)
    return [dataclasses.asdict(r) | {"candidate": args.candidates[r.index]} for r in ranked]


def _capfilt(args):
    texts = [args.texts] * len(args.images) if args.texts else None
    kwargs = {k: getattr(args, k) for k in GenerationOptions.model_fields if getattr(args, k) is not None}
    results = _model(args).capfilt(args.images, texts, num_synthetic=args.num_synthetic, threshold=args.threshold,
                                   **kwargs)
    return [{"image": str(p), "captions": [dataclasses.asdict(c) for c in cs]} for p, cs in zip(args.images, results)]


def _export_onnx(args):
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()] if args.graphs else None
    return _family(args.model).export_onnx(Path(args.model), graphs, Path(args.out) if args.out else None,
                                           args.dtype)


def _merge(args):
    families = {_family(f).name for f in args.folders}
    if len(families) != 1:
        from .errors import InvalidInputError

        raise InvalidInputError(f"merge needs folders of one family; these are {', '.join(sorted(families))}",
                                param="folders")
    return _family(args.folders[0]).merge(Path(args.out), [Path(f) for f in args.folders],
                                          prefer_first=args.prefer_first)


def _serve(args):
    from .server import serve
    from .settings import Settings

    overrides = {k: v for k, v in (("model_repo", args.model_repo), ("host", args.host), ("port", args.port),
                                    ("strict_readiness", args.strict_readiness), ("device", args.device),
                                    ("log_level", args.log_level), ("log_format", args.log_format))
                 if v is not None}
    settings = Settings(**overrides)
    if not Path(settings.model_repo).is_dir():  # else it would run, unready, forever
        raise InvalidInputError(f"model repository {settings.model_repo} is not a folder", param="--model-repo")
    serve(settings)
    return None


def _add_model_args(p):
    p.add_argument("--model", default=str(default_model_repo() / "blip-toy"),
                   help="model folder (default: the shipped blip-toy)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--attention", default="auto", choices=["auto", "eager", "sdpa", "triton"])


def _add_generation_args(p):
    """One flag per generation field (GenerationOptions is their one declaration)."""
    for name, field in GenerationOptions.model_fields.items():
        kind = next(a for a in typing.get_args(field.annotation) if a is not type(None))
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, type=kind, help=field.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model repository over HTTP")
    p.add_argument("--model-repo", help="folder of model folders (default: the project's model_repo/)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--strict-readiness", action="store_true", default=None,
                   help="ready only when every model loaded")
    p.add_argument("--device", help="default device for models without one in model.toml")
    p.add_argument("--log-level")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="json: one object per line with time, level, logger, message, request_id (default: text)")
    p.set_defaults(run=_serve)

    from .shapes.command import register as register_shapes

    register_shapes(sub)

    from .bulk.command import register as register_bulk

    register_bulk(sub, _add_model_args)

    p = sub.add_parser("export-onnx", help="export encoder graphs to ONNX (checked against torch)")
    p.add_argument("model", help="model folder")
    p.add_argument("--graphs", default=None,
                   help="comma-separated, e.g. vision,text,fusion (default: every encoder graph the weights hold)")
    p.add_argument("--out", default=None, help="folder for the .onnx files and manifest (default: MODEL/onnx)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "fp32", "fp16"],
                   help="float16 is meant for GPU providers")
    p.set_defaults(run=_export_onnx)

    p = sub.add_parser("merge", help="write one folder holding the union of several checkpoints of one family")
    p.add_argument("out", help="the folder to write (must not exist)")
    p.add_argument("folders", nargs="+", help="the checkpoints, e.g. a captioning, a retrieval and a VQA folder")
    p.add_argument("--prefer-first", action="store_true",
                   help="where two folders hold different weights for the same part, keep the first's "
                        "(the others' tasks then run on weights they were not trained with)")
    p.set_defaults(run=_merge)

    p = sub.add_parser("caption", help="caption images")
    _add_model_args(p)
    p.add_argument("images", nargs="+")
    p.add_argument("--prompt", default=None)
    p.add_argument("--num-captions", type=int, default=1)
    _add_generation_args(p)
    p.set_defaults(run=_caption)

    p = sub.add_parser("vqa", help="answer a question about an image")
    _add_model_args(p)
    p.add_argument("image")
    p.add_argument("question")
    p.add_argument("--candidates", nargs="*", help="rank these answers instead of generating one")
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.set_defaults(run=_vqa)

    p = sub.add_parser("score", help="ITC / ITM scores of an image against texts")
    _add_model_args(p)
    p.add_argument("image")
    p.add_argument("texts", nargs="+")
    p.add_argument("--heads", nargs="+", default=None, choices=["itc", "itm"], help="default: the model's own")
    p.set_defaults(run=_score)

    p = sub.add_parser("embed", help="embeddings of images and/or texts")
    _add_model_args(p)
    p.add_argument("images", nargs="*")
    p.add_argument("--texts", nargs="+", default=None)
    p.set_defaults(run=_embed)

    p = sub.add_parser("rank", help="rank candidate texts for an image (or, with --text, images for a text)")
    _add_model_args(p)
    p.add_argument("query", help="an image file, or a text with --text")
    p.add_argument("candidates", nargs="+", help="texts, or image files with --text")
    p.add_argument("--text", action="store_true", help="the query is a text and the candidates images")
    p.add_argument("--top-k", type=int, default=10)
    p.set_defaults(run=_rank)

    p = sub.add_parser("capfilt", help="BLIP's CapFilt: synthetic captions and web captions, judged by ITM")
    _add_model_args(p)
    p.add_argument("images", nargs="+")
    p.add_argument("--texts", nargs="+", default=None, help="web captions to judge for every image")
    p.add_argument("--num-synthetic", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.5)
    _add_generation_args(p)
    p.set_defaults(run=_capfilt)

    for name, command in sub.choices.items():
        if name != "serve":
            command.add_argument("--pretty", action="store_true", help="print plain-text tables instead of JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except VlserveError as exc:
        print(json.dumps({"error": {"type": exc.type, "message": exc.message, "param": exc.param}}), file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a one-line error, not a traceback
        print(json.dumps({"error": {"type": "not_found", "message": f"no such file: {exc.filename}",
                                    "param": None}}), file=sys.stderr)
        return 2
    if result is not None:
        print(render(result) if args.pretty else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
