"""A model folder being served: its spec, engine, device worker and state."""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.blip_engine import BlipEngine, EngineOptions
from ..engine.generation.params import GenerationParams
from ..engine.onnx.runtime import OrtOptions
from ..errors import CheckpointError, ModelFailedError, NotReadyError, UnsupportedTaskError
from ..scheduling.runner import ScheduledRunner
from ..scheduling.worker import DeviceWorker, Limits
from ..settings import Settings
from .spec import ModelSpec

log = logging.getLogger("vlserve.repository")


def relative_paths(message: str, root: Path) -> str:
    """A message for clients: paths shown relative to the model repository, not absolute."""
    for prefix in {str(root.resolve()), str(root.absolute()), str(root)}:
        message = message.replace(prefix + os.sep, "")
    return message


@dataclass(eq=False)
class ServedModel:
    spec: ModelSpec
    state: str = "loading"  # loading | ready | failed
    error: str | None = None
    engine: BlipEngine | None = None
    worker: DeviceWorker | None = None
    load_seconds: float | None = None
    tasks: tuple[str, ...] = ()
    caption_defaults: GenerationParams = field(default_factory=GenerationParams)
    vqa_defaults: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=10))

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, settings: Settings, metrics) -> None:
        start = time.monotonic()
        spec = self.spec
        try:
            b = spec.batching
            ort = OrtOptions(providers=settings.ort_providers, intra_op_threads=settings.ort_intra_op_threads,
                             optimization=settings.ort_optimization, spinning=settings.ort_spinning,
                             max_batch=max(b.max_batch_size or settings.max_batch_size, settings.max_images))
            engine = BlipEngine(spec.folder, EngineOptions(
                device=spec.resolved_device(settings), dtype=spec.dtype or settings.dtype,
                attention=spec.attention or settings.attention, fusion_first_token=spec.fusion_first_token,
                default_prompt=spec.prompt, max_pixels=settings.max_pixels, cross_attention=spec.cross_attention,
                onnx_graphs=spec.onnx_graphs(), onnx_dir=spec.onnx_dir, ort=ort))
            tasks = engine.tasks
            if spec.tasks is not None:
                extra = sorted(set(spec.tasks) - set(tasks))
                if extra:
                    raise CheckpointError(f"model.toml lists tasks the weights cannot serve: {', '.join(extra)} "
                                          f"(they serve: {', '.join(tasks)})")
                tasks = tuple(t for t in tasks if t in spec.tasks)
            self.caption_defaults = GenerationParams().replace(**spec.generation.caption.model_dump()).validate()
            self.vqa_defaults = GenerationParams(max_new_tokens=10).replace(
                **spec.generation.vqa.model_dump()).validate()
            limits = Limits(max_batch_size=b.max_batch_size or settings.max_batch_size,
                            max_queue_delay_ms=b.max_queue_delay_ms if b.max_queue_delay_ms is not None
                            else settings.max_queue_delay_ms,
                            max_queue_size=b.max_queue_size or settings.max_queue_size,
                            max_decode_rows=b.max_decode_rows or settings.max_decode_rows)
            self.worker = DeviceWorker(engine, limits, metrics.for_model(self.name), self.name,
                                       on_death=self._worker_died).start()
            self.engine, self.tasks = engine, tasks
            self.load_seconds = time.monotonic() - start
            self.state = "ready"
            metrics.model_loaded(self.name, self.load_seconds)
            log.info("loaded %s from %s in %.1fs: tasks %s on %s/%s; runtimes %s", self.name, spec.folder,
                     self.load_seconds, ", ".join(tasks), engine.device, engine.dtype,
                     ", ".join(f"{g}={engine.runtime(g)}" for g in engine.graphs))
        except Exception as exc:  # one broken folder must not take the server down
            self.state, self.error = "failed", relative_paths(f"{type(exc).__name__}: {exc}", spec.folder.parent)
            detail = "" if isinstance(exc, CheckpointError) else "\n" + traceback.format_exc()
            log.error("failed to load %s from %s: %s%s", self.name, spec.folder, exc, detail)

    def _worker_died(self, error: Exception) -> None:
        self.state, self.error = "failed", str(error)

    def runner(self, deadline: float, pool=None) -> ScheduledRunner:
        if self.state == "failed":
            raise ModelFailedError(f"model '{self.name}' failed: {self.error}", param="model")
        if self.state != "ready":
            raise NotReadyError(f"model '{self.name}' is {self.state}", param="model")
        return ScheduledRunner(self.worker, deadline, pool)

    def require(self, task: str) -> None:
        if task not in self.tasks:
            raise UnsupportedTaskError(f"model '{self.name}' does not serve '{task}'; it serves: "
                                       f"{', '.join(self.tasks) or 'nothing'}", param="model")

    def describe(self) -> dict:
        engine = self.engine
        return {
            "name": self.name, "family": self.spec.family, "state": self.state, "error": self.error,
            "tasks": list(self.tasks), "graphs": list(engine.graphs) if engine else [],
            "device": str(engine.device) if engine else self.spec.device,
            "dtype": str(engine.dtype).removeprefix("torch.") if engine else self.spec.dtype,
            "attention": engine.backend.name if engine else self.spec.attention,
            "cross_attention": engine.cross_mode if engine else self.spec.cross_attention,
            "runtimes": {g: engine.runtime(g) for g in engine.graphs} if engine else None,
            "load_seconds": self.load_seconds,
        }

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
