"""Running the tasks on an engine inline, as the Python API does."""

from __future__ import annotations

from vlserve.scheduling.runner import DirectRunner
from vlserve.tasks.models import TaskModel


def task_model(engine, name: str = "model", max_batch_size: int = 32) -> TaskModel:
    return TaskModel(name, DirectRunner(engine, max_batch_size), engine.capabilities)
