"""The Python API: load a model folder and call its tasks directly, without a server.

    import vlserve
    model = vlserve.load_model("model_repo/blip-toy")
    model.caption(["cat.jpg"])        # [[Caption(text=..., tokens=[...], logprob=...)]]

Images may be paths, bytes or PIL images. The same tasks run as in the server (tasks/),
with the engine called inline instead of through the batching worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from pathlib import Path

from .engine.family import Capabilities, EngineOptions, FamilyEngine
from .engine.generation.params import GenerationParams
from .repository import registry
from .repository.spec import ModelSpec
from .scheduling.runner import DirectRunner
from .tasks import defaults
from .tasks.capfilt import capfilt as capfilt_task
from .tasks.caption import caption as caption_task
from .tasks.models import TaskModel
from .tasks.retrieval import embed as embed_task
from .tasks.retrieval import rank as rank_task
from .tasks.retrieval import score as score_task
from .tasks.vqa import vqa as vqa_task


def _run(coro):
    """Run a task coroutine to completion, also from code that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Pipeline:
    def __init__(self, engine: FamilyEngine, name: str = "model", caption: GenerationParams = defaults.CAPTION,
                 vqa: GenerationParams = defaults.VQA, answers: tuple[str, ...] = ()):
        self.engine = engine
        caps = engine.capabilities
        self.capabilities: Capabilities = dataclasses.replace(caps, answers=caps.answers or tuple(answers))
        self.model = TaskModel(name, DirectRunner(engine), self.capabilities)
        self.caption_defaults, self.vqa_defaults = caption, vqa

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.capabilities.tasks

    def _params(self, base: GenerationParams, options: dict) -> GenerationParams:
        if "num_captions" in options:
            options["num_return"] = options.pop("num_captions")
        unknown = set(options) - set(GenerationParams.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return base.replace(**options)

    def _pixels(self, images):
        return self.engine.pixels(list(images))

    def caption(self, images, prompt=None, **generation):
        """One list of captions per image (num_captions of them, best first for beams)."""
        params = self._params(self.caption_defaults, generation)
        return _run(caption_task(self.model, self._pixels(images), prompt=prompt, params=params))

    def embed_images(self, images):
        return _run(embed_task(self.model, pixels=self._pixels(images)))[0]

    def embed_texts(self, texts):
        return _run(embed_task(self.model, texts=list(texts)))[1]

    def score(self, images, texts, heads=None):
        """{head: (images, texts) scores}; heads None: every head the model has (BLIP: itc and itm)."""
        heads = self.capabilities.score_heads if heads is None else tuple(heads)
        return _run(score_task(self.model, self._pixels(images), list(texts), heads))

    def rank(self, *, image=None, text=None, candidates, k_itc=16, top_k=10, rerank=None, reranker=None):
        """Rank candidate texts for an image query, or candidate images for a text query;
        `reranker` another Pipeline whose ITM re-ranks the ITC shortlist."""
        kwargs = dict(k_itc=k_itc, top_k=top_k, rerank=rerank)
        images = [image] if image is not None else list(candidates)
        if reranker is not None:
            kwargs |= dict(reranker=reranker.model, rerank_pixels=reranker._pixels(images))
        if image is not None:
            return _run(rank_task(self.model, query_pixels=self._pixels(images), candidate_texts=list(candidates),
                                  **kwargs))
        return _run(rank_task(self.model, query_text=text, candidate_pixels=self._pixels(images), **kwargs))

    def capfilt(self, images, texts=None, num_synthetic=1, threshold=0.5, filter=None, **generation):
        """BLIP's CapFilt: web + sampled synthetic captions per image, each with its ITM verdict;
        `filter` another Pipeline whose ITM judges them."""
        params = self._params(self.caption_defaults.replace(**defaults.CAPFILT_SAMPLING), generation)
        images = list(images)
        judge = {} if filter is None else dict(filter=filter.model, filter_pixels=filter._pixels(images))
        return _run(capfilt_task(self.model, self._pixels(images), texts, params=params,
                                 num_synthetic=num_synthetic, threshold=threshold, **judge))

    def vqa(self, images, questions, candidates=None, mode=None, top_k=None, **generation):
        params = self._params(self.vqa_defaults, generation)
        return _run(vqa_task(self.model, self._pixels(images), list(questions), params=params,
                             candidates=candidates, mode=mode, top_k=top_k))


def load_model(path: str | Path, *, device: str = "cpu", dtype: str = "float32", precision: str | None = None,
               attention: str = "auto", **family_options) -> Pipeline:
    """Load a model folder (any family; its model.toml's family table, generation defaults
    and answer list apply). `precision` (fp32 | bf16 | int8) replaces `dtype` when given.
    Keyword options go to the family's table (e.g. BLIP's cross_attention, fusion_first_token,
    prompt)."""
    folder = Path(path)
    spec = ModelSpec.from_folder(folder)
    family = registry.family(spec.family)
    table = (spec.family_options.model_dump() if spec.family_options is not None else {}) | family_options
    dtype, int8 = spec.precision_options(precision) if precision is not None else (dtype, ())
    engine = family.load(folder, EngineOptions(device=device, dtype=dtype, attention=attention, int8_graphs=int8),
                         family.options(table))
    return Pipeline(engine, spec.name, caption=defaults.CAPTION.replace(**spec.generation.caption.given()),
                    vqa=defaults.VQA.replace(**spec.generation.vqa.given()), answers=tuple(spec.vqa.answers))
