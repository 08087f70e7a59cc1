"""`vlserve bulk JOB INPUT --out OUTPUT`: a bulk job over a folder, a manifest or WebDataset shards."""

from __future__ import annotations

import argparse
import signal

from .readers import KINDS
from .writers import FORMATS

JOB_NAMES = ("caption", "embed", "score", "capfilt")  # jobs.JOBS, named here so parsing imports no torch


def _run(args: argparse.Namespace) -> dict:
    from .jobs import Options
    from .run import run_bulk

    # a plain `kill` then ends like Ctrl-C: the rows buffered for the next Parquet part are written
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    generation = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens),
                                    ("seed", args.seed)) if v is not None}
    if args.job != "capfilt":
        generation.pop("seed", None)  # only capfilt samples
    options = Options(prompt=args.prompt, generation=generation, modality=args.modality, heads=args.heads,
                      num_synthetic=args.num_synthetic, threshold=args.threshold)
    common = dict(batch_size=args.batch_size, fmt=args.format, kind=args.input_kind, part_rows=args.part_rows,
                  options=options, progress=not args.quiet, device=args.device, dtype=args.dtype)
    if args.ray is None:
        return run_bulk(args.job, args.input, args.out, args.model, **common)
    from .ray_data import run_on_ray

    return run_on_ray(args.job, args.input, args.out, args.model, address=args.ray, workers=args.ray_workers,
                      gpus_per_worker=args.ray_gpus_per_worker, cpus_per_worker=args.ray_cpus_per_worker, **common)


def register(subparsers, add_model_args) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bulk", help="caption / embed / score / capfilt many images into Parquet or JSONL "
                                           "(resumable)")
    p.add_argument("job", choices=list(JOB_NAMES))
    p.add_argument("input", help="a folder of images, a .jsonl/.csv/.parquet manifest, or WebDataset .tar shard(s)")
    p.add_argument("--out", required=True,
                   help="OUT.jsonl: one JSONL file; else a folder of Parquet parts (e.g. OUT.parquet/)")
    p.add_argument("--format", choices=list(FORMATS), default=None, help="default: from --out's suffix")
    p.add_argument("--input-kind", choices=["auto", *KINDS], default="auto")
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=16, help="items per batch through the model")
    p.add_argument("--part-rows", type=int, default=1024, help="Parquet: rows per part file")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--prompt", default=None, help="caption: the decoder prompt")
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--modality", choices=["image", "text"], default="image", help="embed: what to embed")
    p.add_argument("--heads", nargs="+", choices=["itc", "itm"], default=None, help="score: default the model's own")
    p.add_argument("--num-synthetic", type=int, default=1, help="capfilt: sampled captions per image")
    p.add_argument("--threshold", type=float, default=0.5, help="capfilt: ITM probability to keep a caption")
    p.add_argument("--seed", type=int, default=0, help="capfilt: sampling seed (fixed, so a resumed run agrees)")
    ray = p.add_argument_group("on a Ray cluster (Ray Data; pip install 'vlserve[ray]')", description=(
        "Workers read the input and run the model; the driver writes --out as above, resumably (the "
        "keys already written are skipped). INPUT and --model must be at the same path on every node."))
    ray.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="'local' (start Ray for this run), 'auto' (this node's cluster) or ray://HOST:10001")
    ray.add_argument("--ray-workers", type=int, default=1, metavar="N", help="workers, each holding the model")
    ray.add_argument("--ray-cpus-per-worker", type=float, default=1, metavar="N",
                     help="CPUs per worker (its torch threads)")
    ray.add_argument("--ray-gpus-per-worker", type=float, default=0, metavar="N",
                     help="GPUs per worker (> 0: the model runs on the worker's GPU; 0.5: two workers per GPU)")
    p.set_defaults(run=_run)
    return p
