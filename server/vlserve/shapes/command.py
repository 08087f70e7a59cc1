"""`vlserve shapes`: write a seeded set of shapes-world scenes (PNG + scenes.json)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> dict:
    from .files import write_scenes

    return write_scenes(args.out, args.n, args.seed)


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("shapes", help="write shapes-world scenes: PNG images + captions and Q/A JSON")
    p.add_argument("--n", type=int, default=16, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="scenes are fixed by the seed")
    p.add_argument("--out", required=True, help="folder to write into")
    p.set_defaults(run=_run)
    return p
