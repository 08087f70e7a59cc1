"""A model folder being served: its spec, engine, device worker, capabilities and state."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.family import Capabilities, EngineOptions, FamilyEngine
from ..engine.generation.params import GenerationParams
from ..engine.onnx.runtime import OrtOptions
from ..errors import CheckpointError, ModelFailedError, NotReadyError
from ..scheduling.image_cache import ImageStateCache
from ..scheduling.runner import ScheduledRunner
from ..scheduling.worker import DeviceWorker, Limits
from ..settings import Settings
from ..tasks import defaults
from ..tasks.models import TaskModel, require
from . import registry
from .spec import ModelSpec

log = logging.getLogger("vlserve.repository")
STATES = ("loading", "ready", "failed", "skipped")  # skipped: no family claims the folder


def relative_paths(message: str, root: Path) -> str:
    """A message for clients: paths shown relative to the model repository, not absolute."""
    for prefix in {str(root.resolve()), str(root.absolute()), str(root)}:
        message = message.replace(prefix + os.sep, "")
    return message


def limits_of(spec: ModelSpec, settings: Settings) -> Limits:
    b = spec.batching
    return Limits(**{f: getattr(b, f) if getattr(b, f) is not None else getattr(settings, f)
                     for f in Limits.__dataclass_fields__})


@dataclass(eq=False)
class ServedModel:
    spec: ModelSpec
    state: str = "loading"  # one of STATES
    error: str | None = None
    engine: FamilyEngine | None = None
    worker: DeviceWorker | None = None
    image_cache: ImageStateCache | None = None
    load_seconds: float | None = None
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(tasks=()))
    caption_defaults: GenerationParams = defaults.CAPTION
    vqa_defaults: GenerationParams = defaults.VQA

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.capabilities.tasks

    def load(self, settings: Settings, metrics) -> None:
        start = time.monotonic()
        spec = self.spec
        try:
            limits = limits_of(spec, settings)
            ort = OrtOptions(providers=settings.ort_providers, intra_op_threads=settings.ort_intra_op_threads,
                             optimization=settings.ort_optimization, spinning=settings.ort_spinning,
                             max_batch=max(limits.max_batch_size, settings.max_images))
            dtype, int8_graphs = spec.resolved_precision(settings)
            options = EngineOptions(device=spec.resolved_device(settings), dtype=dtype,
                                    attention=spec.attention or settings.attention, max_pixels=settings.max_pixels,
                                    onnx_graphs=spec.onnx_graphs(), onnx_dir=spec.onnx_dir, ort=ort,
                                    int8_graphs=int8_graphs)
            engine = registry.family(spec.family).load(spec.folder, options, spec.family_options)
            self.capabilities = self._narrowed(engine.capabilities)
            self.caption_defaults = defaults.CAPTION.replace(**spec.generation.caption.given()).validate()
            self.vqa_defaults = defaults.VQA.replace(**spec.generation.vqa.given()).validate()
            budget = spec.image_cache_bytes if spec.image_cache_bytes is not None else settings.image_cache_bytes
            self.image_cache = ImageStateCache(budget, self.name, metrics.for_model(self.name))
            self.worker = DeviceWorker(engine, limits, metrics.for_model(self.name), self.name,
                                       on_death=self._worker_died).start()
            self.engine = engine
            self.load_seconds = time.monotonic() - start
            self.state = "ready"
            metrics.model_loaded(self.name, self.load_seconds)
            log.info("loaded %s (%s) from %s in %.1fs: tasks %s on %s/%s; runtimes %s", self.name, spec.family,
                     spec.folder, self.load_seconds, ", ".join(self.tasks), engine.device, engine.dtype,
                     ", ".join(f"{g}={engine.runtime(g)}" for g in self.capabilities.graphs))
        except Exception as exc:  # one broken folder must not take the server down
            self.state, self.error = "failed", relative_paths(f"{type(exc).__name__}: {exc}", spec.folder.parent)
            detail = "" if isinstance(exc, CheckpointError) else "\n" + traceback.format_exc()
            log.error("failed to load %s from %s: %s%s", self.name, spec.folder, exc, detail)

    def _narrowed(self, caps: Capabilities) -> Capabilities:
        """The weights' capabilities, narrowed by model.toml's tasks, with its answer list."""
        spec, tasks = self.spec, caps.tasks
        if spec.tasks is not None:
            extra = sorted(set(spec.tasks) - set(tasks))
            if extra:
                raise CheckpointError(f"model.toml lists tasks the weights cannot serve: {', '.join(extra)} "
                                      f"(they serve: {', '.join(tasks)})")
            tasks = tuple(t for t in tasks if t in spec.tasks)
        answers = caps.answers or tuple(spec.vqa.answers)
        return dataclasses.replace(caps, tasks=tasks, answers=answers)

    def _worker_died(self, error: Exception) -> None:
        self.state, self.error = "failed", str(error)

    def runner(self, deadline: float, pool=None) -> ScheduledRunner:
        if self.state in ("failed", "skipped"):
            raise ModelFailedError(f"model '{self.name}' {self.state}: {self.error}", param="model")
        if self.state != "ready":
            raise NotReadyError(f"model '{self.name}' is {self.state}", param="model")
        return ScheduledRunner(self.worker, deadline, pool, self.image_cache)

    def task_model(self, deadline: float, pool=None) -> TaskModel:
        return TaskModel(self.name, self.runner(deadline, pool), self.capabilities)

    def require(self, task: str, role: str = "model") -> None:
        require(TaskModel(self.name, None, self.capabilities), task, role=role)

    def describe(self) -> dict:
        engine, caps = self.engine, self.capabilities
        return {
            "name": self.name, "family": self.spec.family, "state": self.state, "default": bool(self.spec.default),
            "error": self.error,
            "warnings": list(self.spec.warnings),
            "tasks": list(caps.tasks), "graphs": list(caps.graphs),
            "capabilities": {"score_heads": list(caps.score_heads), "vqa_modes": list(caps.vqa_modes),
                             "embedding_dim": caps.embedding_dim, "max_text_tokens": caps.max_text_tokens,
                             "image_size": caps.image_size, "answers": list(caps.answers),
                             "answer_count": len(caps.answers)} if engine else None,
            "device": str(engine.device) if engine else self.spec.device,
            "dtype": str(engine.dtype).removeprefix("torch.") if engine else self.spec.dtype,
            "runtimes": {g: engine.runtime(g) for g in caps.graphs} if engine else None,
            "details": {**engine.describe(), "image_cache": self.image_cache.describe()} if engine else None,
            "load_seconds": self.load_seconds,
        }

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.image_cache is not None:
            self.image_cache.clear()
