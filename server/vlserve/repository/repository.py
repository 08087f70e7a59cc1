"""The model repository: every model folder in a directory, loaded at start-up.

Each non-hidden sub-folder is a candidate. A HuggingFace hub cache folder
(`models--<org>--<name>/snapshots/<revision>/`, as `huggingface-cli download` without
`--local-dir` leaves it) is served from its current snapshot as `<org>/<name>`. A folder
no family claims is listed as `skipped` with the reason, and never counts for readiness.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CheckpointError, InvalidInputError, ModelNotFoundError
from ..settings import Settings
from .served import ServedModel, relative_paths
from .spec import ModelSpec, UnclaimedFolder

log = logging.getLogger("vlserve.repository")
HUB_PREFIX = "models--"


def hub_snapshot(folder: Path) -> Path | None:
    """The snapshot a hub cache folder's refs/main points at, else its only (or newest) one."""
    snapshots = folder / "snapshots"
    ref = folder / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime) \
        if snapshots.is_dir() else []
    return found[-1] if found else None


def candidates(root: Path) -> list[tuple[Path, str, str | None]]:
    """(folder, model name, why it cannot be served or None) for each sub-folder of root."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name.startswith(HUB_PREFIX):
            name = folder.name[len(HUB_PREFIX):].replace("--", "/", 1)
            snapshot = hub_snapshot(folder)
            out.append((snapshot or folder, name, None if snapshot else "a hub cache folder without snapshots"))
        else:
            out.append((folder, folder.name, None))
    return out


class ModelRepository:
    def __init__(self, settings: Settings, metrics):
        self.settings, self.metrics = settings, metrics
        self.models: dict[str, ServedModel] = {}
        self.loading_done = False
        self.root = root = Path(settings.model_repo)
        if not root.is_dir():
            log.error("model repository %s does not exist", root)
            return
        for folder, name, why in candidates(root):
            self._add(self._spec(folder, name, why))
        marked = [m.name for m in self.models.values() if m.spec.default]
        if len(marked) > 1:
            log.warning("several models say default = true (%s): none is the default", ", ".join(marked))

    def _spec(self, folder: Path, name: str, why: str | None) -> ServedModel:
        spec = ModelSpec.model_construct(name=name, folder=folder, warnings=[])
        if why is not None:
            log.warning("skipping %s: %s", folder, why)
            return ServedModel(spec, state="skipped", error=why)
        try:
            spec = ModelSpec.from_folder(folder, name)
        except UnclaimedFolder as exc:
            log.warning("skipping %s: %s", folder, exc)
            return ServedModel(spec, state="skipped", error=relative_paths(str(exc), self.root))
        except CheckpointError as exc:  # e.g. a model.toml typo: shown in /v1/models and logged
            log.error("cannot serve %s: %s", folder, exc)
            return ServedModel(spec, state="failed", error=relative_paths(str(exc), self.root))
        for warning in spec.warnings:
            log.warning("%s: %s", name, warning)
        return ServedModel(spec)

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

    def _counted(self) -> list[ServedModel]:
        return [m for m in self.models.values() if m.state != "skipped"]

    def not_ready_reason(self) -> str:
        if not self.loading_done:
            return "loading models"
        failed = [m.name for m in self._counted() if m.state == "failed"]
        if not failed:
            return "no model in the repository"
        ready = [m.name for m in self._counted() if m.state == "ready"]
        if ready and self.settings.strict_readiness:
            return f"strict readiness: model(s) failed: {', '.join(failed)} (ready: {', '.join(ready)})"
        return f"no model loaded; failed: {', '.join(failed)}"

    @property
    def ready(self) -> bool:
        if not self.loading_done:
            return False
        states = [m.state for m in self._counted()]
        if self.settings.strict_readiness:
            return bool(states) and all(s == "ready" for s in states)
        return "ready" in states

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFoundError(f"no model named '{name}'; models: {', '.join(self.models) or 'none'}",
                                     param="model") from None

    def pick(self, name: str | None, task: str, role: str = "model") -> ServedModel:
        """The named model, or the only model that serves the task."""
        if name is not None:
            model = self.get(name)
            if model.state == "ready":
                model.require(task, role)
            return model
        serving = [m for m in self.models.values() if m.state == "ready" and task in m.tasks]
        if len(serving) == 1:
            return serving[0]
        defaults = [m for m in serving if m.spec.default]
        if len(defaults) == 1:  # several serve it: the one model.toml marks `default = true`
            return defaults[0]
        if not serving:
            loading = [m.name for m in self.models.values() if m.state == "loading"]
            if loading:
                return self.models[loading[0]]  # its runner() answers 503 while it loads
            raise ModelNotFoundError(f"no loaded model serves '{task}'", param=role)
        raise InvalidInputError(f"several models serve '{task}'; choose one with '{role}': "
                                f"{', '.join(m.name for m in serving)}", param=role)

    def stop(self) -> None:
        for model in self.models.values():
            model.stop()
