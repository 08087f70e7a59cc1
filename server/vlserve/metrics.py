"""Prometheus metrics. Each app has its own registry; every update goes through `_safe`,
so a metrics failure is logged and never fails a request."""

from __future__ import annotations

import functools
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("vlserve.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OUTCOMES = ("succeeded", "failed", "cancelled", "expired", "rejected")


def _safe(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - metrics must never break serving
            log.exception("metrics update failed")
    return wrapper


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.received = Counter("vlserve_requests_received", "requests that arrived (answered ones are in "
                                "vlserve_requests_total, the rest in flight)", ["task"], registry=r)
        self.requests = Counter("vlserve_requests", "answered requests by outcome",
                                ["model", "task", "outcome", "status"], registry=r)
        self.accepted = Counter("vlserve_requests_accepted", "requests whose work was queued",
                                ["model", "task"], registry=r)
        self.latency = Histogram("vlserve_request_latency_seconds", "request latency", ["model", "task"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("vlserve_queue_time_seconds", "time an item waited for its batch",
                                    ["model", "graph"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute_time = Histogram("vlserve_compute_time_seconds", "time of one batch (or decode step)",
                                      ["model", "graph"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vlserve_batch_size", "examples per batch (rows per decode step)",
                                    ["model", "graph"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("vlserve_queue_depth", "examples waiting per graph", ["model", "graph"], registry=r)
        self.tokens = Counter("vlserve_generated_tokens", "tokens generated", ["model"], registry=r)
        self.images = Counter("vlserve_images", "images processed", ["model"], registry=r)
        self.load_time = Gauge("vlserve_model_load_seconds", "time to load the model", ["model"], registry=r)
        self.in_flight = Gauge("vlserve_requests_in_flight", "requests being handled", registry=r)
        self.device_memory = Gauge("vlserve_device_memory_bytes", "CUDA memory allocated", ["device"], registry=r)
        self.cache_hits = Counter("vlserve_image_cache_hits", "images whose vision states a request did not "
                                  "encode itself (cached, or encoded by a concurrent request)", ["model"], registry=r)
        self.cache_misses = Counter("vlserve_image_cache_misses", "images encoded by the vision graph with the image "
                                    "cache on", ["model"], registry=r)
        self.cache_evictions = Counter("vlserve_image_cache_evictions", "cached images evicted to stay within the "
                                       "byte budget", ["model"], registry=r)
        self.cache_bytes = Gauge("vlserve_image_cache_bytes", "bytes of vision states cached", ["model"], registry=r)
        self.cache_entries = Gauge("vlserve_image_cache_entries", "images cached", ["model"], registry=r)

    def for_model(self, model: str) -> "ModelMetrics":
        return ModelMetrics(self, model)

    @_safe
    def model_loaded(self, model: str, seconds: float) -> None:
        self.load_time.labels(model).set(seconds)

    @_safe
    def request_accepted(self, model: str, task: str) -> None:
        self.accepted.labels(model, task).inc()

    @_safe
    def request_received(self, task: str) -> None:
        self.received.labels(task).inc()

    @_safe
    def request_done(self, model: str, task: str, outcome: str, status: int, seconds: float) -> None:
        self.requests.labels(model, task, outcome, str(status)).inc()
        self.latency.labels(model, task).observe(seconds)

    @_safe
    def images_processed(self, model: str, n: int) -> None:
        self.images.labels(model).inc(n)

    @_safe
    def in_flight_add(self, delta: int) -> None:
        self.in_flight.inc(delta)

    def render(self) -> bytes:
        self._device_memory()
        return generate_latest(self.registry)

    @_safe
    def _device_memory(self) -> None:
        import sys

        torch = sys.modules.get("torch")  # only when a model loaded it; never import it here
        if torch is not None and torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                self.device_memory.labels(f"cuda:{i}").set(torch.cuda.memory_allocated(i))


class ModelMetrics:
    """The hooks a DeviceWorker (from its own thread: prometheus-client is thread-safe) and the
    model's image cache call."""

    def __init__(self, metrics: Metrics, model: str):
        self.m, self.model = metrics, model

    @_safe
    def queued(self, graph: str, seconds: float) -> None:
        self.m.queue_time.labels(self.model, graph).observe(seconds)

    @_safe
    def computed(self, graph: str, seconds: float, batch_size: int) -> None:
        self.m.compute_time.labels(self.model, graph).observe(seconds)
        self.m.batch_size.labels(self.model, graph).observe(batch_size)

    @_safe
    def depth(self, graph: str, n: int) -> None:
        self.m.queue_depth.labels(self.model, graph).set(n)

    @_safe
    def generated(self, tokens: int) -> None:
        self.m.tokens.labels(self.model).inc(tokens)

    @_safe
    def cache_hits(self, n: int) -> None:
        self.m.cache_hits.labels(self.model).inc(n)

    @_safe
    def cache_misses(self, n: int) -> None:
        self.m.cache_misses.labels(self.model).inc(n)

    @_safe
    def cache_evictions(self, n: int) -> None:
        self.m.cache_evictions.labels(self.model).inc(n)

    @_safe
    def cache_size(self, nbytes: int, entries: int) -> None:
        self.m.cache_bytes.labels(self.model).set(nbytes)
        self.m.cache_entries.labels(self.model).set(entries)
