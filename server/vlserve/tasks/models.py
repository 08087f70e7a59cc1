"""What a task is handed for each model it uses, and the one place capabilities are checked."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.family import Capabilities, FamilyEngine
from ..errors import UnsupportedTaskError
from ..scheduling.runner import Runner


@dataclass(frozen=True)
class TaskModel:
    name: str
    runner: Runner
    capabilities: Capabilities

    @property
    def engine(self) -> FamilyEngine:
        return self.runner.engine


def require(model: TaskModel, task: str, *, heads: tuple[str, ...] = (), vqa_mode: str | None = None,
            role: str = "model") -> None:
    """Raise UnsupportedTaskError (400) naming what the model does serve."""
    caps = model.capabilities
    if task not in caps.tasks:
        raise UnsupportedTaskError(f"model '{model.name}' does not serve '{task}'; it serves: "
                                   f"{', '.join(caps.tasks) or 'nothing'}", param=role)
    missing = [h for h in heads if h not in caps.score_heads]
    if missing:
        raise UnsupportedTaskError(f"model '{model.name}' has no {', '.join(missing)} head; it scores with: "
                                   f"{', '.join(caps.score_heads) or 'nothing'}", param="heads" if role == "model"
                                   else role)
    if vqa_mode is not None and vqa_mode not in caps.vqa_modes:
        raise UnsupportedTaskError(f"model '{model.name}' cannot answer by '{vqa_mode}'; its VQA modes: "
                                   f"{', '.join(caps.vqa_modes) or 'none'}", param="mode")
