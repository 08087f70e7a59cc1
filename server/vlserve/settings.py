"""Every server setting, in one place. Environment variables `VLSERVE_<NAME>` set them;
`vlserve serve` flags map onto the same fields. Nothing reads the environment at import.

Per-model choices (device, dtype, batching, generation defaults) live in each model's
model.toml; the settings below are the server-wide defaults they fall back to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


def default_model_repo() -> Path:
    """The project's model_repo/ (an editable install or a checkout), else ./model_repo."""
    project = Path(__file__).resolve().parents[2] / "model_repo"
    return project if project.is_dir() else Path("model_repo")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLSERVE_", extra="ignore")

    # where and what to serve
    model_repo: Path = Field(default_factory=default_model_repo, description="folder of model folders")
    host: str = "127.0.0.1"
    port: int = 8000
    strict_readiness: bool = Field(False, description="ready only when every model loaded (else: when one did)")
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field("text", description="text: one readable line; json: one "
                                                "object per line (time, level, logger, message, request_id)")
    api_key: SecretStr | None = Field(None, description="when set, requests need `Authorization: Bearer <key>`")
    auth_metrics_and_docs: bool = Field(True, description="with an API key set, /metrics, /openapi.json and "
                                        "/docs need it too (false: they stay open, e.g. for a scraper)")

    # model defaults (model.toml overrides)
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    dtype: str = "float32"
    precision: Literal["fp32", "bf16", "int8"] | None = Field(
        None, description="every model's precision unless its model.toml sets precision or dtype; "
        "int8: float32 with int8 linear layers where they pay (CPU); unset: dtype")
    attention: str = Field("auto", description="auto | eager | sdpa | triton")
    max_batch_size: int = Field(32, ge=1, description="examples per encoder batch")
    max_queue_delay_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill")
    max_queue_size: int = Field(512, ge=1, description="examples queued per graph before 503")
    max_decode_rows: int = Field(64, ge=1, description="sequences (beams included) decoded together")
    image_cache_bytes: int = Field(256 * MiB, ge=0, description="bytes of vision states kept per model, so "
                                   "tasks on the same image encode it once; 0 = off")

    # ONNX Runtime, for the graphs a model.toml puts on runtime "onnx"
    ort_providers: str = Field("auto", description="auto (TensorRT/CUDA with onnxruntime-gpu on a CUDA device, "
                               "else CPU) or a list in order of preference: tensorrt,cuda,cpu")
    ort_intra_op_threads: int = Field(0, ge=0, description="threads per ONNX graph; 0 = one per physical core")
    ort_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    ort_spinning: bool = Field(False, description="let idle ONNX Runtime threads spin (faster alone, "
                                                  "slower beside the torch decoder)")

    # request limits
    request_timeout_s: float = Field(60.0, gt=0, description="default deadline; a request may only shorten it")
    max_body_bytes: int = 32 * MiB
    max_images: int = Field(64, ge=1, description="images per request")
    max_image_bytes: int = 16 * MiB
    max_pixels: int = Field(40_000_000, ge=1, description="pixels per decoded image")
    max_request_pixels: int = Field(100_000_000, ge=1, description="pixels of all images of one request")
    max_decode_pixels: int = Field(120_000_000, ge=1, description="pixels being decoded at once, server-wide "
                                   "(requests wait their turn); at least max_pixels")
    max_texts: int = Field(256, ge=1, description="texts / questions / candidates per request")
    max_text_chars: int = 4000
    max_new_tokens: int = Field(128, ge=1)
    max_beams: int = Field(8, ge=1)
    preprocess_threads: int = Field(4, ge=1, description="threads decoding and resizing images")

    # fetching image URLs (off unless enabled, and then only from the listed hosts)
    allow_url_fetch: bool = False
    url_allow_hosts: str = Field("", description="comma-separated host names images may be fetched from")
    url_max_bytes: int = 16 * MiB
    url_timeout_s: float = 10.0

    # browsers on other origins (off unless listed; preflights need no API key)
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS, or *")

    # connections
    header_timeout_s: float = Field(10.0, gt=0, description="time a client has to send a request's headers")
    body_timeout_s: float = Field(60.0, gt=0, description="time a client has to send a request's whole body")
    keep_alive_s: float = Field(5.0, gt=0, description="idle time before a keep-alive connection is closed")
    max_connections: int = Field(1024, ge=1, description="open connections; more are closed at once")

    drain_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, how long in-flight requests may finish "
                                 "(then they get 503)")

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("VLSERVE_API_KEY is set but empty: unset it to serve without a key, or give a key")
        return key

    @model_validator(mode="after")
    def _budgets_fit(self) -> "Settings":
        if self.max_decode_pixels < self.max_pixels:
            raise ValueError(f"max_decode_pixels ({self.max_decode_pixels}) must be at least max_pixels "
                             f"({self.max_pixels}), or the largest allowed image could never be decoded")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def allowed_hosts(self) -> set[str]:
        return {h.strip().lower() for h in self.url_allow_hosts.split(",") if h.strip()}
