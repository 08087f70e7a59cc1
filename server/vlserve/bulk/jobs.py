"""The bulk jobs: which Pipeline calls each makes for a batch, and the columns it writes.

caption   `caption`, `logprob` (the best caption; greedy or beams as the options say)
embed     `embedding` (unit length), `modality` (image, or text with --modality text)
score     `itc` (and `itm` when the model has a match head) of each item's own image-text pair
capfilt   every candidate (web captions given as the item's text, then the synthetic ones) as
          parallel lists `captions`, `sources`, `itm`, `kept`, and `kept_captions`
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..pipeline import Pipeline, _run
from ..tasks.models import require


@dataclass
class Options:
    prompt: str | None = None
    generation: dict = field(default_factory=dict)  # GenerationParams fields (num_beams, max_new_tokens, seed, ...)
    modality: str = "image"  # embed
    heads: tuple[str, ...] | None = None  # score: None = every head the model has
    num_synthetic: int = 1  # capfilt
    threshold: float = 0.5


class Job:
    name: str
    columns: dict[str, str]  # result column -> writers' type name
    text: str = "none"  # "none", "optional" or "required": what the job reads of an item's text

    def __init__(self, options: Options):
        self.options = options

    def needs_image(self) -> bool:
        return True

    def check(self, pipeline: Pipeline) -> None:
        """Raise before any item runs when the model cannot serve the job."""
        require(pipeline.model, self.name)

    def run(self, pipeline: Pipeline, images: list, texts: list) -> list[dict]:
        """One batch (decoded images, checked texts) -> one result dict per item."""
        raise NotImplementedError


class CaptionJob(Job):
    name = "caption"
    columns = {"caption": "str", "logprob": "float"}

    def run(self, pipeline, images, texts):
        found = pipeline.caption(images, prompt=self.options.prompt, **self.options.generation)
        return [{"caption": c[0].text, "logprob": c[0].logprob} for c in found]


class EmbedJob(Job):
    name = "embed"
    columns = {"embedding": "floats", "modality": "str"}

    @property
    def text(self):
        return "required" if self.options.modality == "text" else "none"

    def needs_image(self):
        return self.options.modality == "image"

    def run(self, pipeline, images, texts):
        modality = self.options.modality
        vectors = pipeline.embed_images(images) if modality == "image" else pipeline.embed_texts(texts)
        return [{"embedding": v, "modality": modality} for v in vectors.float().tolist()]


async def _pair_scores(model, pixels, texts: list[str], heads) -> dict[str, list[float]]:
    """Each image with its own text only (score would run every image x text pair)."""
    runner = model.runner
    states = await runner.encode_images(pixels)
    out = {}
    if "itc" in heads:
        img, txt = await asyncio.gather(runner.image_embeddings(states), runner.text_embeddings(texts))
        out["itc"] = (img * txt).sum(-1).tolist()
    if "itm" in heads:
        out["itm"] = (await runner.match(states, list(range(len(texts))), texts)).tolist()
    return out


class ScoreJob(Job):
    name = "score"
    columns = {"itc": "float", "itm": "float"}
    text = "required"

    def heads(self, pipeline):
        return pipeline.capabilities.score_heads if self.options.heads is None else tuple(self.options.heads)

    def check(self, pipeline):
        require(pipeline.model, "score", heads=self.heads(pipeline))

    def run(self, pipeline, images, texts):
        scores = _run(_pair_scores(pipeline.model, pipeline._pixels(images), list(texts), self.heads(pipeline)))
        return [{h: scores[h][i] for h in scores} for i in range(len(texts))]


class CapfiltJob(Job):
    name = "capfilt"
    columns = {"captions": "strs", "sources": "strs", "itm": "float_list", "kept": "bools", "kept_captions": "strs"}
    text = "optional"

    def check(self, pipeline):
        require(pipeline.model, "score", heads=("itm",))
        if self.options.num_synthetic > 0:
            require(pipeline.model, "caption")

    def run(self, pipeline, images, texts):
        web = [[] if t is None else [t] if isinstance(t, str) else list(t) for t in texts]
        found = pipeline.capfilt(images, web, num_synthetic=self.options.num_synthetic,
                                 threshold=self.options.threshold, **self.options.generation)
        return [{"captions": [c.text for c in cs], "sources": [c.source for c in cs], "itm": [c.itm for c in cs],
                 "kept": [c.kept for c in cs], "kept_captions": [c.text for c in cs if c.kept]} for cs in found]


JOBS = {job.name: job for job in (CaptionJob, EmbedJob, ScoreJob, CapfiltJob)}


def make_job(name: str, options: Options | None = None) -> Job:
    return JOBS[name](options or Options())
