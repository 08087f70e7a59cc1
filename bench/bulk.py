"""Bulk jobs: images/s of `vlserve bulk` caption and capfilt on one machine and on Ray Data
(1 and 2 workers), against a plain loop over the Python API (the baseline), same run.

Models: the trained blip-toy and a BLIP-base-size model with random weights (ViT-B/16 at 384
px, BERT-base text side; captioner, text encoder and ITM head). Input: a folder of rendered
scenes with their captions as sidecar .txt files (capfilt's web captions). Every runner does
the same work: the same batches, exactly --tokens new tokens per caption (min = max), one
synthetic caption per image for capfilt, and each run includes loading the model. A Ray run
also starts its workers (a process each, importing torch, loading its own model: seconds per
job, which a long job amortises); starting the local Ray instance is not timed, and one
one-image run of every runner warms caches first. Threads: --threads in all, split among the
Ray workers (2 workers: threads/2 each).

    python bench/bulk.py [--models toy,base] [--images 256] [--base-images 16] [--jobs caption,capfilt]
                         [--batch 8] [--tokens 20] [--threads 2] [--workers 1,2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import torch

from common import ROOT, interleaved, machine, random_blip_folder, save

import vlserve
from vlserve.bulk import Options, run_bulk, run_on_ray
from vlserve.families.blip.model import Components
from vlserve.shapes.files import write_scenes

FULL = Components(text_encoder=True, text_encoder_cross=True, projections=True, itm_head=True, text_decoder=True)


def scenes(folder: Path, n: int) -> list[Path]:
    """n scenes, each with its caption as a sidecar .txt (the folder reader's text)."""
    if not (folder / "scenes.json").is_file() or json.loads((folder / "scenes.json").read_text())["n"] != n:
        write_scenes(folder, n, seed=11)
        for record in json.loads((folder / "scenes.json").read_text())["scenes"]:
            (folder / record["image"]).with_suffix(".txt").write_text(record["caption"])
    return sorted(folder.glob("scene_*.png"))


def warm(model: Path, images: list[Path], args, out_dir: Path) -> dict:
    """First-call costs (the weights into the page cache, torch's lazy set-up, Ray's first
    worker processes) paid before any timed run: a one-image job through every runner, twice;
    the second's times are each runner's fixed cost per job."""
    one = out_dir / f"warm-{model.name}"
    one.mkdir()
    for suffix in (".png", ".txt"):
        (one / images[0].with_suffix(suffix).name).write_bytes(images[0].with_suffix(suffix).read_bytes())
    short = Options(generation={"max_new_tokens": 2})
    runs = itertools.count()
    fns = {"bulk": lambda: run_bulk("capfilt", one, one / f"{next(runs)}.jsonl", model, options=short,
                                    progress=False, device=args.device)}
    for workers in args.workers:
        fns[f"ray_{workers}w"] = lambda w=workers: run_on_ray(
            "capfilt", one, one / f"{next(runs)}.jsonl", model, workers=w, options=short, progress=False,
            device=args.device, cpus_per_worker=max(1, args.threads // w), gpus_per_worker=gpus(args, w))
    return {name: t["median_s"] for name, t in interleaved(fns, repeats=1, warmup=1).items()}


def gpus(args, workers: int) -> float:
    return 1 / workers if args.device.startswith("cuda") else 0  # the workers share one GPU


def runners(job: str, model: Path, images: list[Path], args, out_dir: Path) -> dict:
    folder = images[0].parent
    generation = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    if job == "capfilt":
        generation["seed"] = 0
    options = Options(generation=generation, num_synthetic=1)
    runs = itertools.count()

    def out() -> Path:  # a fresh output each run: an existing one would be resumed (nothing to do)
        return out_dir / f"{model.name}-{job}-{next(runs)}.jsonl"

    def counted(summary: dict) -> None:  # a timed run that skipped or failed items timed nothing
        if summary["rows_written"] != len(images) or summary["errors"] or summary["done_before"]:
            raise RuntimeError(f"{job} on {model.name} did not run every image: {summary}")

    def loop():
        pipeline = vlserve.load_model(model, device=args.device)
        for i in range(0, len(images), args.batch):
            batch = images[i:i + args.batch]
            if job == "caption":
                pipeline.caption(batch, **generation)
            else:
                texts = [[p.with_suffix(".txt").read_text()] for p in batch]
                pipeline.capfilt(batch, texts, num_synthetic=1, **generation)

    fns = {"python_loop": loop,
           "bulk": lambda: counted(run_bulk(job, folder, out(), model, batch_size=args.batch, options=options,
                                            progress=False, device=args.device))}
    for workers in args.workers:
        fns[f"ray_{workers}w"] = lambda w=workers, g=gpus(args, workers): counted(run_on_ray(
            job, folder, out(), model, workers=w, cpus_per_worker=max(1, args.threads // w), gpus_per_worker=g,
            batch_size=args.batch, options=options, progress=False, device=args.device))
    return fns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="toy,base", help="comma-separated: toy (model_repo/blip-toy), base")
    ap.add_argument("--jobs", default="caption,capfilt")
    ap.add_argument("--images", type=int, default=256, help="images per job on blip-toy")
    ap.add_argument("--base-images", type=int, default=16, help="images per job on the BLIP-base-size model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20, help="new tokens per caption, exactly")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all (split among Ray workers)")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to run ('' for none)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w]
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.gettempdir())
    models = {"toy": (ROOT / "model_repo" / "blip-toy", args.images),
              "base": (tmp / "vlserve-bench-bulk-base", args.base_images)}
    models = {name: models[name] for name in args.models.split(",")}
    if "base" in models:
        random_blip_folder(models["base"][0], "base", FULL)
    if args.workers:
        import ray

        ray.init(num_cpus=max(args.threads, *args.workers), num_gpus=1 if args.device.startswith("cuda") else 0,
                 include_dashboard=False)
    results, fixed = {}, {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for name, (folder, n) in models.items():
            images = scenes(tmp / f"vlserve-bench-bulk-scenes-{n}", n)
            fixed[name] = warm(folder, images, args, work)
            for job in args.jobs.split(","):
                # warmup=0: every run loads its model anyway, and a warm-up round would double the time
                timed = interleaved(runners(job, folder, images, args, work), args.repeats, warmup=0)
                base = timed["python_loop"]["median_s"]
                results[f"{name}/{job}"] = {runner: t | {"images": n, "images_per_s": n / t["median_s"],
                                                         "vs_python_loop": base / t["median_s"]}
                                            for runner, t in timed.items()}
    payload = {"benchmark": "bulk", "config": vars(args), "machine": machine(), "results": results,
               "one_image_job_s": fixed}
    sizes = "-".join(f"{name}{n}" for name, (_, n) in models.items())
    path = save(f"bulk-{args.device}-{sizes}-b{args.batch}-t{args.tokens}", payload, args.out)
    print(f"{'model/job':16}{'runner':14}{'images':>7}{'s':>9}{'images/s':>10}{'x loop':>8}")
    for key, by_runner in results.items():
        for runner, r in by_runner.items():
            print(f"{key:16}{runner:14}{r['images']:7d}{r['median_s']:9.2f}{r['images_per_s']:10.2f}"
                  f"{r['vs_python_loop']:8.2f}")
    for name, times in fixed.items():
        print(f"{name}: a one-image capfilt job (the fixed cost per job) takes "
              + ", ".join(f"{runner} {t:.2f} s" for runner, t in times.items()))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
