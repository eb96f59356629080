"""Fixtures for cog tests that need the job side: real services with a JobService + an enqueuer on an embedded
Redis (the worker tests' fixtures), datasets of synthetic images, real job transitions (to produce real
notifications without a worker process) and, for the end-to-end test, a real ``atelier worker`` subprocess.

Import the fixtures into a test module: ``from tests.bot.stack import *  # noqa: F403``.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from storage.settings import ImageLimits, Settings
from tests.worker.conftest import (  # noqa: F401 — fixtures re-exported for the bot tests
    FAST_TRAIN,
    WorkerProcess,
    models_dir,
    redis_server,
    redis_url,
    wait_for,
    wired_services,
)

__all__ = ["FAST_TRAIN", "WorkerProcess", "job_services", "job_settings", "models_dir", "png", "redis_server",
           "redis_url", "seed_dataset", "wait_for", "finish_generation", "fake_training_run", "start_training",
           "finish_training"]


def png(seed: int, size: int = 64, colour: tuple[int, int, int] | None = None) -> bytes:
    """A small distinct PNG (shapes on a flat colour)."""
    import random

    from trainer.synthetic import draw_shapes

    rng = random.Random(seed)
    bg = colour or (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    img = draw_shapes(rng, size, bg, (255 - bg[0], 255 - bg[1], 255 - bg[2]))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def job_settings(tmp_path: Path, database_url: str, redis_url: str, models_dir: Path) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url,
        models_dir=models_dir, generation_cooldown_seconds=0, stale_heartbeat_seconds=3, max_attempts=3,
        image_limits=ImageLimits(min_images=10), default_base_model="tiny-sd15", min_image_side=32,
    )


@pytest.fixture
async def job_services(job_settings: Settings) -> AsyncIterator[Any]:
    async with wired_services(job_settings) as s:
        yield s


@pytest.fixture
def seed_dataset(job_services: Any) -> Callable[..., Any]:
    """``await seed_dataset(actor, "name", count=10)``: a dataset of synthetic images added through ingest."""
    from storage.dataset_views import IncomingFile

    async def make(actor: Any, name: str = "shapes", count: int = 10, seed: int = 0) -> str:
        await job_services.datasets.create(actor, name)
        files = [IncomingFile(f"img-{i}.png", png(seed * 1000 + i), "shapes") for i in range(count)]
        report = await job_services.datasets.add_images(actor, name, files)
        assert len(report.added) == count, report.refused
        return name

    return make


async def fake_training_run(services: Any, job_id: int) -> None:
    """Drive a queued training job through the real worker-side transitions (no worker process): started,
    one epoch milestone with a sample, then finished with real blobs (a grid, a loss curve, samples)."""
    await start_training(services, job_id)
    await finish_training(services, job_id)


def _transitions(services: Any) -> Any:
    from storage.queue.job_transitions import JobTransitions

    return JobTransitions(services.db, services.settings, services.quotas, services.elements)


async def start_training(services: Any, job_id: int) -> None:
    """Started, then the epoch-1 milestone (50 %, loss, ETA, a sample image)."""
    t = _transitions(services)
    job = await t.start(job_id, 0, "test-worker")
    assert job is not None
    sample = await services.blobs.put_bytes(png(901, colour=(200, 40, 40)))
    await t.beat(job_id, 1, {"phase": "training", "step": 5, "total_steps": 10, "epoch": 1, "total_epochs": 2,
                             "loss": 0.1234, "eta_seconds": 30, "fraction": 0.5, "samples": [sample]},
                 milestone={"epoch": 1, "samples": [sample]})


async def finish_training(services: Any, job_id: int) -> None:
    """The success transition with real files (weights are placeholder bytes: nothing loads them here)."""
    blobs = services.blobs
    weights = await blobs.put_bytes(b"not really safetensors " + str(job_id).encode())
    import numpy as np
    from safetensors.numpy import save

    kohya = await blobs.put_bytes(save({"w": np.full((2, 2), job_id, np.float16)}, metadata={"job": str(job_id)}))
    meta = await blobs.put_bytes(b'{"name": "x"}')
    grid = await blobs.put_bytes(png(902, 128))
    loss = await blobs.put_bytes(png(903, 96))
    final = await blobs.put_bytes(png(904))
    await _transitions(services).succeed_training(
        job_id, 1, weights_blob=weights, kohya_blob=kohya, metadata_blob=meta,
        artifacts={"samples": {"2": [final]}, "samples_final": [final], "loss_curve": loss, "grid": grid},
        recommended_strength=0.8, summary={"epochs": 2, "steps": 10, "final_loss": 0.0987, "resumed_from_epoch": 0},
        strength_range=(0.6, 1.0))


async def finish_generation(services: Any, job_id: int, *, images: int | None = None) -> int:
    """Complete a queued generation job through the real transitions with real PNGs; returns the generation id."""
    from storage.db.models import Job
    from storage.queue.job_transitions import JobTransitions

    t = JobTransitions(services.db, services.settings, services.quotas, services.elements)
    async with services.db.read() as session:
        row = await session.get(Job, job_id)
        assert row is not None
        dispatch, count = row.attempts, images or int(row.payload.get("count", 1))
        seed = row.payload.get("seed") or 1000
        width, height = row.payload.get("width") or 64, row.payload.get("height") or 64
    job = await t.start(job_id, dispatch, "test-worker")
    assert job is not None
    hashes = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (width, height), ((job_id * 40 + i * 60) % 256, 90, 160)).save(buf, "PNG")
        hashes.append(await services.blobs.put_bytes(buf.getvalue()))
    return await t.succeed_generation(job_id, job.attempts, images=hashes, seed=seed,
                                      seeds=[seed + i for i in range(count)], prompt=row.payload["prompt"],
                                      warnings=[], width=width, height=height)
