"""vlserve on Ray Serve: one Serve deployment per model (or model group) of the model
repository, each replica running vlserve's own app (gateway, batching scheduler, engines) over
its models, behind an ingress that serves the HTTP API `vlserve serve` serves.

    serve run deploy/ray/serve.yaml                 # the config file's args go to build_app
    serve run vlserve.integrations.ray_serve:build_app model_repo=/srv/models   # every model there

Replicas, CPUs/GPUs and autoscaling are Serve's deployment options: `deployment` here sets
them for every model deployment, and a config file's `deployments:` list overrides them per
deployment by name (the model's or group's name; the ingress is "ingress").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..settings import Settings
from .ray_ingress import Ingress
from .ray_replica import ModelServer

INSTALL = "Ray Serve is not installed: pip install 'vlserve[ray]'"


class ServeArgs(BaseModel):
    """build_app's args (a config file's `args:`)."""

    model_config = ConfigDict(extra="forbid")
    model_repo: Path | None = Field(None, description="the model repository (default: vlserve's); a relative "
                                    "path is taken from where the application is built")
    models: list[str] | None = Field(None, description="the models to serve (default: every model folder)")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="deployment name -> models one "
                                         "deployment serves together (e.g. capfilt's captioner and filter)")
    settings: dict[str, Any] = Field(default_factory=dict, description="vlserve Settings fields for every "
                                     "replica (as VLSERVE_* would set them), e.g. max_body_bytes")
    deployment: dict[str, Any] = Field(default_factory=dict, description="Serve options of every model "
                                       "deployment: num_replicas, autoscaling_config, ray_actor_options, ...")
    ingress: dict[str, Any] = Field(default_factory=dict, description="Serve options of the ingress")
    attempts: int = Field(3, ge=1, description="replicas a request is tried on when one dies under it")


# vlserve batches many requests per replica itself: Serve's default of 5 in flight would starve it
MODEL_DEFAULTS = {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 64}
INGRESS_DEFAULTS = {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 1000}


def _serve():
    try:
        from ray import serve
    except ImportError as exc:
        raise ImportError(INSTALL) from exc
    return serve


def plan(args: ServeArgs, settings: Settings) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """(deployment -> its models, model -> its deployment in the repository's order, the default
    deployment: that of the model whose model.toml says `default = true`, else the first)."""
    from ..metrics import Metrics
    from ..repository.repository import ModelRepository

    found = {name: m for name, m in ModelRepository(settings, Metrics()).models.items() if m.state != "skipped"}
    wanted = args.models if args.models is not None else list(found)
    grouped = [name for names in args.groups.values() for name in names]
    unknown = sorted(set(wanted + grouped) - set(found))
    if unknown:
        raise ValueError(f"no model folder for {', '.join(unknown)} in {settings.model_repo}; "
                         f"models: {', '.join(found) or 'none'}")
    twice = sorted({name for name in grouped if grouped.count(name) > 1})
    if twice:
        raise ValueError(f"models in more than one group: {', '.join(twice)}")
    deployments = {group: list(names) for group, names in args.groups.items()}
    deployments |= {name: [name] for name in wanted if name not in grouped}
    if not deployments:
        raise ValueError(f"no model to serve in {settings.model_repo}")
    for name in deployments:
        if "#" in name or name == "ingress":
            raise ValueError(f"'{name}' cannot name a deployment ('#' is Serve's, 'ingress' the ingress')")
    of = {model: group for group, names in deployments.items() for model in names}
    models = {name: of[name] for name in found if name in of}
    marked = [name for name in models if found[name].spec.default]
    return deployments, models, of[marked[0]] if len(marked) == 1 else next(iter(deployments))


def build_app(args: dict | None = None):
    """The Serve application (Serve's builder convention: `serve run module:build_app`)."""
    serve = _serve()
    config = ServeArgs.model_validate(args or {})
    settings = dict(config.settings)
    if config.model_repo is not None:  # replicas run elsewhere: they get an absolute path
        settings["model_repo"] = str(config.model_repo.expanduser().resolve())
    checked = Settings(**settings)  # a bad setting fails here, not in every replica
    settings["model_repo"] = str(Path(checked.model_repo).resolve())
    deployments, models, default = plan(config, checked)
    model_server = serve.deployment(ModelServer).options(**(MODEL_DEFAULTS | config.deployment))
    bound = {name: model_server.options(name=name).bind(settings, names) for name, names in deployments.items()}
    ingress = serve.deployment(Ingress).options(name="ingress", **(INGRESS_DEFAULTS | config.ingress))
    return ingress.bind(bound, models, default, settings, config.attempts)
