# vlserve's server image. GPU by default (CUDA base image, CUDA torch wheels); for machines
# without a GPU build the CPU variant:
#   docker build --build-arg BASE_IMAGE=ubuntu:24.04 \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t vlserve:cpu .
# docker-compose.cpu.yml does the same. Models are not baked in: mount a model repository
# (read-only) at /models.
ARG BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_SPEC=torch

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# torch first and alone: the largest layer, rebuilt only when its version or index changes
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server server
COPY kernels kernels
RUN pip install --no-cache-dir .

# not root; a home for the kernel caches torch and triton write
RUN useradd --system --create-home --uid 10001 vlserve
USER vlserve

ENV VLSERVE_HOST=0.0.0.0 \
    VLSERVE_PORT=8000 \
    VLSERVE_MODEL_REPO=/models
EXPOSE 8000

# ready = a model loaded and not draining; loading real checkpoints can take a while
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('VLSERVE_PORT', '8000'), timeout=4)"]

# SIGTERM drains: readiness turns 503, in-flight requests get VLSERVE_DRAIN_GRACE_S to finish
CMD ["vlserve", "serve"]
