"""The Python API: load a model folder and call its tasks directly, without a server.

    import vlserve
    model = vlserve.load_model("model_repo/blip-toy")
    model.caption(["cat.jpg"])        # [[Caption(text=..., tokens=[...], logprob=...)]]

Images may be paths, bytes or PIL images.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

from .engine.blip_engine import BlipEngine, EngineOptions
from .engine.generation.params import GenerationParams
from .tasks import blip_tasks
from .tasks.runner import DirectRunner


def _run(coro):
    """Run a task coroutine to completion, also from code that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Pipeline:
    def __init__(self, engine: BlipEngine, generation: GenerationParams = GenerationParams()):
        self.engine = engine
        self.runner = DirectRunner(engine)
        self.generation = generation

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.engine.tasks

    def _params(self, base: GenerationParams, options: dict) -> GenerationParams:
        if "num_captions" in options:
            options["num_return"] = options.pop("num_captions")
        unknown = set(options) - set(GenerationParams.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return base.replace(**options)

    def caption(self, images, prompt=None, **generation):
        """One list of captions per image (num_captions of them, best first for beams)."""
        params = self._params(self.generation, generation)
        return _run(blip_tasks.caption(self.runner, self.engine.pixels(list(images)), prompt=prompt,
                                       params=params))

    def embed_images(self, images):
        return _run(blip_tasks.embed(self.runner, pixels=self.engine.pixels(list(images))))[0]

    def embed_texts(self, texts):
        return _run(blip_tasks.embed(self.runner, texts=list(texts)))[1]

    def score(self, images, texts, heads=("itc", "itm")):
        return _run(blip_tasks.score(self.runner, self.engine.pixels(list(images)), list(texts), heads))

    def rank(self, *, image=None, text=None, candidates, k_itc=16, top_k=10, use_itm=True):
        """Rank candidate texts for an image query, or candidate images for a text query."""
        kwargs = dict(k_itc=k_itc, top_k=top_k, use_itm=use_itm)
        if image is not None:
            return _run(blip_tasks.rank(self.runner, query_pixels=self.engine.pixels([image]),
                                        candidate_texts=list(candidates), **kwargs))
        return _run(blip_tasks.rank(self.runner, query_text=text,
                                    candidate_pixels=self.engine.pixels(list(candidates)), **kwargs))

    def capfilt(self, images, texts=None, num_synthetic=1, threshold=0.5, **generation):
        """BLIP's CapFilt: web + sampled synthetic captions per image, each with its ITM verdict."""
        base = self.generation.replace(do_sample=True, top_p=0.9, top_k=0)
        params = self._params(base, generation)
        return _run(blip_tasks.capfilt(self.runner, self.engine.pixels(list(images)), texts, params=params,
                                       num_synthetic=num_synthetic, threshold=threshold))

    def vqa(self, images, questions, candidates=None, **generation):
        params = self._params(self.generation.replace(max_new_tokens=10), generation)
        return _run(blip_tasks.vqa(self.runner, self.engine.pixels(list(images)), list(questions),
                                   params=params, candidates=candidates))


def load_model(path: str | Path, *, device: str = "cpu", dtype: str = "float32", attention: str = "auto",
               **options) -> Pipeline:
    """Load a BLIP model folder (HF layout or original .pth) for direct use."""
    return Pipeline(BlipEngine(path, EngineOptions(device=device, dtype=dtype, attention=attention, **options)))
