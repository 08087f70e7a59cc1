"""The model repository: every model folder in a directory, loaded at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CheckpointError, InvalidInputError, ModelNotFoundError
from ..settings import Settings
from .served import ServedModel, relative_paths
from .spec import ModelSpec, is_model_folder

log = logging.getLogger("vlserve.repository")


class ModelRepository:
    def __init__(self, settings: Settings, metrics):
        self.settings, self.metrics = settings, metrics
        self.models: dict[str, ServedModel] = {}
        self.loading_done = False
        root = Path(settings.model_repo)
        folders = sorted(p for p in root.iterdir() if is_model_folder(p)) if root.is_dir() else []
        if not root.is_dir():
            log.error("model repository %s does not exist", root)
        for folder in folders:
            try:
                spec = ModelSpec.from_folder(folder)
            except CheckpointError as exc:
                spec = ModelSpec(name=folder.name, folder=folder)
                self._add(ServedModel(spec, state="failed", error=relative_paths(str(exc), root)))
                continue
            self._add(ServedModel(spec))

    def _add(self, model: ServedModel) -> None:
        if model.name in self.models:
            model.state, model.error = "failed", f"duplicate model name '{model.name}'"
            self.models[f"{model.name}@{model.spec.folder.name}"] = model
            return
        self.models[model.name] = model

    def load_all(self) -> None:
        """Blocking: load each folder in turn (the app runs this in a thread at start-up)."""
        for model in self.models.values():
            if model.state == "loading":
                model.load(self.settings, self.metrics)
        self.loading_done = True

    def not_ready_reason(self) -> str:
        if not self.loading_done:
            return "loading models"
        failed = [m.name for m in self.models.values() if m.state == "failed"]
        if not failed:
            return "no model in the repository"
        ready = [m.name for m in self.models.values() if m.state == "ready"]
        if ready and self.settings.strict_readiness:
            return f"strict readiness: model(s) failed: {', '.join(failed)} (ready: {', '.join(ready)})"
        return f"no model loaded; failed: {', '.join(failed)}"

    @property
    def ready(self) -> bool:
        if not self.loading_done:
            return False
        states = [m.state for m in self.models.values()]
        if self.settings.strict_readiness:
            return bool(states) and all(s == "ready" for s in states)
        return "ready" in states

    def pick(self, name: str | None, task: str) -> ServedModel:
        """The named model, or the only model that serves the task."""
        if name is not None:
            try:
                model = self.models[name]
            except KeyError:
                raise ModelNotFoundError(f"no model named '{name}'; models: {', '.join(self.models) or 'none'}",
                                         param="model") from None
            if model.state == "ready":
                model.require(task)
            return model
        serving = [m for m in self.models.values() if m.state == "ready" and task in m.tasks]
        if len(serving) == 1:
            return serving[0]
        if not serving:
            loading = [m.name for m in self.models.values() if m.state == "loading"]
            if loading:
                return self.models[loading[0]]  # its runner() answers 503 while it loads
            raise ModelNotFoundError(f"no loaded model serves '{task}'", param="model")
        raise InvalidInputError(f"several models serve '{task}'; choose one with 'model': "
                                f"{', '.join(m.name for m in serving)}", param="model")

    def stop(self) -> None:
        for model in self.models.values():
            model.stop()
